// The extension's logic that needs no VS Code: join URLs, and `$/collab/peers`
// turned into what to draw. Unit-tested with Node's test runner (test/).
// Protocol: collab_ls/protocol.py is the one definition of the `$/collab/...` surface.

/** An LSP position (line, character in the negotiated encoding: utf-16 for VS Code). */
export interface Position {
  line: number;
  character: number;
}

/** An LSP range; in `$/collab/peers` `start` is the anchor and `end` the cursor. */
export interface Range {
  start: Position;
  end: Position;
}

/** One entry of `$/collab/peers` (collab_ls/presence_shell.py `PeerView.to_json`). */
export interface PeerEntry {
  id: number;
  name: string;
  colour: string;
  document: string | null;
  uri: string | null;
  ranges: Range[];
  cursor: Position | null;
}

/** A parsed join URL `ws[s]://HOST[:PORT]/ROOM?secret=SECRET` (as collab-ls parses it). */
export interface JoinUrl {
  url: string;
  scheme: 'ws' | 'wss';
  host: string;
  port: number;
  room: string;
  secret: string;
  readOnly: boolean;
}

export class JoinUrlError extends Error {}

/**
 * Parse and check one join URL, with the messages collab-ls gives
 * (collab_ls/relay_urls.py `parse_relay_url`).
 */
export function parseJoinUrl(text: string): JoinUrl {
  const url = text.trim();
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new JoinUrlError(`bad join URL ${JSON.stringify(url)}: expected ws://HOST:PORT/ROOM?secret=SECRET`);
  }
  const scheme = parsed.protocol.replace(/:$/, '');
  if (scheme !== 'ws' && scheme !== 'wss') {
    throw new JoinUrlError(
      `bad join URL ${JSON.stringify(url)}: the scheme must be ws:// or wss://, not ${JSON.stringify(scheme)}`,
    );
  }
  if (!parsed.hostname) {
    throw new JoinUrlError(`bad join URL ${JSON.stringify(url)}: no host`);
  }
  const room = decodeURIComponent(parsed.pathname.replace(/^\/+/, ''));
  if (!room) {
    throw new JoinUrlError(`bad join URL ${JSON.stringify(url)}: no room (expected ws://host:port/<room>)`);
  }
  const secret = parsed.searchParams.get('secret');
  if (!secret) {
    throw new JoinUrlError(`bad join URL ${JSON.stringify(url)}: no secret (expected ?secret=...)`);
  }
  const port = parsed.port ? Number(parsed.port) : scheme === 'wss' ? 443 : 80;
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const readOnly = parsed.searchParams.get('access') === 'read-only';
  return { url, scheme, host, port, room, secret, readOnly };
}

/**
 * Parse what a user pasted for `--join`: one URL, or several of one relay
 * cluster separated by commas (all naming the same room). Returns the
 * normalised argument for `collab-ls --join`.
 */
export function parseJoinArgument(text: string): { argument: string; urls: JoinUrl[] } {
  const parts = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (parts.length === 0) {
    throw new JoinUrlError('no join URL: paste the URL the host shared (ws://HOST:PORT/ROOM?secret=SECRET)');
  }
  const urls = parts.map(parseJoinUrl);
  const rooms = new Set(urls.map((u) => u.room));
  if (rooms.size > 1) {
    throw new JoinUrlError(`the URLs name different rooms: ${[...rooms].join(', ')}`);
  }
  return { argument: urls.map((u) => u.url).join(','), urls };
}

/** A join URL for showing: the secret replaced. */
export function redactUrl(url: string): string {
  return url.replace(/([?&]secret=)[^&]*/, '$1…');
}

/** One thing to draw for a peer in one document. */
export interface PeerDecoration {
  uri: string;
  name: string;
  colour: string;
  /** Zero-width ranges at each cursor (the head, `end`), in document order. */
  cursors: Range[];
  /** Non-empty selections, normalised so that `start` comes before `end`. */
  selections: Range[];
  /** The label after the first cursor, e.g. `alice`. */
  label: string;
}

const HEX_COLOUR = /^#[0-9a-fA-F]{6}$/;
const FALLBACK_COLOUR = '#ff8c00';

function validPosition(p: unknown): p is Position {
  const q = p as Position | null;
  return (
    typeof q === 'object' &&
    q !== null &&
    Number.isInteger(q.line) &&
    Number.isInteger(q.character) &&
    q.line >= 0 &&
    q.character >= 0
  );
}

export function comparePositions(a: Position, b: Position): number {
  return a.line !== b.line ? a.line - b.line : a.character - b.character;
}

function ordered(r: Range): Range {
  return comparePositions(r.start, r.end) <= 0 ? r : { start: r.end, end: r.start };
}

/**
 * `$/collab/peers` params to decorations: one per peer in a shared file,
 * skipping malformed entries (a peer in no file has `uri: null` and no
 * ranges). Names shared by several peers are told apart by their id.
 */
export function peerDecorations(params: unknown): PeerDecoration[] {
  const peers = (params as { peers?: unknown } | null)?.peers;
  if (!Array.isArray(peers)) {
    return [];
  }
  const names = new Map<string, number>();
  for (const p of peers) {
    const name = typeof p?.name === 'string' ? p.name : '?';
    names.set(name, (names.get(name) ?? 0) + 1);
  }
  const out: PeerDecoration[] = [];
  for (const raw of peers) {
    const peer = raw as Partial<PeerEntry> | null;
    if (!peer || typeof peer.uri !== 'string' || !Array.isArray(peer.ranges)) {
      continue;
    }
    const ranges = peer.ranges.filter((r) => validPosition(r?.start) && validPosition(r?.end));
    if (ranges.length === 0) {
      continue;
    }
    const name = typeof peer.name === 'string' && peer.name ? peer.name : '?';
    const colour = typeof peer.colour === 'string' && HEX_COLOUR.test(peer.colour) ? peer.colour : FALLBACK_COLOUR;
    const label = (names.get(name) ?? 0) > 1 && typeof peer.id === 'number' ? `${name} (${peer.id % 10000})` : name;
    out.push({
      uri: peer.uri,
      name,
      colour,
      cursors: ranges.map((r) => ({ start: r.end, end: r.end })),
      selections: ranges.filter((r) => comparePositions(r.start, r.end) !== 0).map(ordered),
      label,
    });
  }
  return out;
}

/** Decorations grouped by document URI. */
export function decorationsByUri(decorations: PeerDecoration[]): Map<string, PeerDecoration[]> {
  const byUri = new Map<string, PeerDecoration[]>();
  for (const d of decorations) {
    const list = byUri.get(d.uri) ?? [];
    list.push(d);
    byUri.set(d.uri, list);
  }
  return byUri;
}

/** `collab.status` (and what the extension knows) as the status-bar text. */
export interface SessionStatus {
  role: 'host' | 'guest' | null;
  connected: boolean;
  peers: number;
  following?: string | null;
}

export function statusText(s: SessionStatus | null): string {
  if (!s || !s.role) {
    return '$(broadcast) collab: off';
  }
  const icon = s.connected ? '$(broadcast)' : '$(debug-disconnect)';
  const link = s.connected ? '' : ' (disconnected)';
  const peers = s.peers === 1 ? '1 peer' : `${s.peers} peers`;
  const follow = s.following ? `, following ${s.following}` : '';
  return `${icon} collab ${s.role}${link}: ${peers}${follow}`;
}

/**
 * The `collab.languageServer` setting as a command (`['pylsp']`), or `undefined`
 * when unset. A string is a one-word command; anything else that is not a
 * non-empty list of non-empty strings is an error, with a message saying so.
 */
export function languageServerCommand(value: unknown): string[] | undefined {
  if (value === undefined || value === null || value === '') {
    return undefined;
  }
  const command = typeof value === 'string' ? [value] : value;
  if (Array.isArray(command) && command.length === 0) {
    return undefined;
  }
  if (!Array.isArray(command) || !command.every((a) => typeof a === 'string' && a.length > 0)) {
    throw new Error(`collab.languageServer must be a command like ["pylsp"], not ${JSON.stringify(value)}`);
  }
  return [...command];
}

/** The `collab.mirrorHostProject` setting: when a guest mirrors the host's project. */
export type MirrorSetting = 'ifEmpty' | 'always' | 'never';

/**
 * Whether a guest joins with no checkout (`--workspace`: the host's project is
 * mirrored into the workspace folder), from the setting and the folder's entries.
 * `ifEmpty` (the default) mirrors into a folder that holds nothing but dotfiles,
 * so a guest with a checkout never gets files written into it.
 */
export function joinsWithoutCheckout(setting: unknown, entries: string[]): boolean {
  if (setting === 'always') {
    return true;
  }
  if (setting === 'never') {
    return false;
  }
  return entries.every((name) => name.startsWith('.'));
}

/**
 * The `collab-ls` arguments for sharing or joining. When sharing, the language
 * server command goes last, after `--` (collab-ls takes everything after it as
 * the server's command line); joining never passes one. A join with a
 * `workspace` mirrors the host's project into it (`--workspace DIR`).
 */
export function serverArgs(
  mode: { share: true; relay?: string } | { join: string; workspace?: string },
  opts: { name?: string; logFile?: string; languageServer?: string[] } = {},
): string[] {
  const args =
    'join' in mode
      ? ['--join', mode.join, ...(mode.workspace ? ['--workspace', mode.workspace] : [])]
      : ['--share', ...(mode.relay ? ['--relay', mode.relay] : [])];
  if (opts.name) {
    args.push('--name', opts.name);
  }
  if (opts.logFile) {
    args.push('--log-file', opts.logFile);
  }
  if ('share' in mode && opts.languageServer && opts.languageServer.length > 0) {
    args.push('--', ...opts.languageServer);
  }
  return args;
}

/** A `$/collab/chat` message as one line for an information message. */
export function chatLine(params: unknown): string | null {
  const p = params as { name?: unknown; text?: unknown; self?: unknown } | null;
  if (!p || typeof p.text !== 'string' || p.self === true) {
    return null;
  }
  return `[${typeof p.name === 'string' ? p.name : '?'}] ${p.text}`;
}
