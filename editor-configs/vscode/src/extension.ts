// collab-ls for VS Code: a LanguageClient running `collab-ls --share` or
// `--join URL` for the workspace folder, peer cursors as decorations, the
// session in the status bar, chat as information messages. The logic that
// needs no VS Code is in logic.ts (unit-tested).
import * as vscode from 'vscode';
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
  TransportKind,
} from 'vscode-languageclient/node';
import {
  JoinUrlError,
  joinsWithoutCheckout,
  PeerDecoration,
  SessionStatus,
  chatLine,
  decorationsByUri,
  languageServerCommand,
  parseJoinArgument,
  peerDecorations,
  redactUrl,
  serverArgs,
  statusText,
} from './logic';

// collab_ls/protocol.py
const CMD_SHARE_URL = 'collab.shareUrl';
const CMD_STATUS = 'collab.status';
const CMD_PEERS = 'collab.peers';
const CMD_FOLLOW = 'collab.follow';
const CMD_UNFOLLOW = 'collab.unfollow';
const CMD_CHAT = 'collab.chat';
const NOTIFY_STATUS = '$/collab/status';
const NOTIFY_PEERS = '$/collab/peers';
const NOTIFY_CHAT = '$/collab/chat';
const NOTIFY_CURSOR = '$/collab/cursor';

let client: LanguageClient | undefined;
let role: 'host' | 'guest' | null = null;
let connected = false;
let following: string | null = null;
let lastPeers: PeerDecoration[] = [];
let statusItem: vscode.StatusBarItem;
let output: vscode.OutputChannel;
let cursorTimer: NodeJS.Timeout | undefined;
const decorationTypes = new Map<string, { cursor: vscode.TextEditorDecorationType; selection: vscode.TextEditorDecorationType }>();

export function activate(context: vscode.ExtensionContext): void {
  output = vscode.window.createOutputChannel('collab-ls');
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 100);
  statusItem.command = 'collab.peers';
  updateStatus();
  statusItem.show();
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand('collab.share', share),
    vscode.commands.registerCommand('collab.join', join),
    vscode.commands.registerCommand('collab.follow', follow),
    vscode.commands.registerCommand('collab.unfollow', () => execute(CMD_UNFOLLOW).then(() => setFollowing(null))),
    vscode.commands.registerCommand('collab.peers', showPeers),
    vscode.commands.registerCommand('collab.chat', chat),
    vscode.commands.registerCommand('collab.stop', stop),
    vscode.window.onDidChangeVisibleTextEditors(() => render()),
    vscode.window.onDidChangeTextEditorSelection((e) => scheduleCursor(e.textEditor)),
    { dispose: () => void stop() },
  );
}

export function deactivate(): Thenable<void> | undefined {
  return stop();
}

function workspaceRoot(): vscode.WorkspaceFolder | undefined {
  const active = vscode.window.activeTextEditor?.document.uri;
  return (active && vscode.workspace.getWorkspaceFolder(active)) ?? vscode.workspace.workspaceFolders?.[0];
}

async function start(mode: { share: true; relay?: string } | { join: string; workspace?: string }): Promise<void> {
  const folder = workspaceRoot();
  if (!folder) {
    void vscode.window.showErrorMessage('collab: open a folder first: collab-ls shares a workspace folder');
    return;
  }
  if ('join' in mode) {
    // A guest with no checkout opens an empty folder: the host's project is mirrored into it.
    const entries = await vscode.workspace.fs.readDirectory(folder.uri).then(
      (list) => list.map(([name]) => name),
      () => [] as string[],
    );
    const setting = vscode.workspace.getConfiguration('collab').get<unknown>('mirrorHostProject');
    if (joinsWithoutCheckout(setting, entries)) {
      mode = { join: mode.join, workspace: folder.uri.fsPath };
    }
  }
  await stop();
  const config = vscode.workspace.getConfiguration('collab');
  const command = config.get<string>('path') || 'collab-ls';
  let languageServer: string[] | undefined;
  if ('share' in mode) {
    try {
      languageServer = languageServerCommand(config.get<unknown>('languageServer'));
    } catch (err) {
      // Share anyway, without it: editing together does not need it.
      void vscode.window.showWarningMessage(`collab: ${err instanceof Error ? err.message : String(err)}; ignored`);
    }
  }
  const args = serverArgs(mode, {
    name: config.get<string>('name') || undefined,
    logFile: config.get<string>('logFile') || undefined,
    languageServer,
  });
  const serverOptions: ServerOptions = {
    command,
    args,
    transport: TransportKind.stdio,
    options: { cwd: folder.uri.fsPath },
  };
  const clientOptions: LanguageClientOptions = {
    // Every file of the folder, whatever its language.
    documentSelector: [{ scheme: 'file', pattern: `${folder.uri.fsPath}/**/*` }],
    workspaceFolder: folder,
    outputChannel: output,
    // VS Code answers `applied: false` to an edit for a stale version; collab-ls rebases and retries.
    initializationOptions: { honestApplyEdit: true },
  };
  role = 'share' in mode ? 'host' : 'guest';
  connected = false;
  client = new LanguageClient('collab-ls', 'collab-ls', serverOptions, clientOptions);
  client.onDidChangeState((e) => {
    if (e.newState === State.Stopped) {
      connected = false;
      lastPeers = [];
      render();
      updateStatus();
    }
  });
  try {
    await client.start();
  } catch (err) {
    role = null;
    client = undefined;
    void vscode.window.showErrorMessage(`collab: collab-ls did not start (${command}): ${String(err)}`);
    updateStatus();
    return;
  }
  client.onNotification(NOTIFY_PEERS, (params: unknown) => {
    lastPeers = peerDecorations(params);
    render();
    updateStatus();
  });
  client.onNotification(NOTIFY_CHAT, (params: unknown) => {
    const line = chatLine(params);
    if (line) {
      void vscode.window.showInformationMessage(line);
    }
  });
  client.onNotification(NOTIFY_STATUS, (params: { connected?: boolean; url?: string | null }) => {
    connected = params?.connected === true;
    updateStatus();
  });
  await refreshStatus();
  if (role === 'host') {
    await announceUrl();
  }
}

async function share(): Promise<void> {
  const relay = vscode.workspace.getConfiguration('collab').get<string>('relay') || undefined;
  await start({ share: true, relay });
}

async function join(url?: string): Promise<void> {
  const text =
    url ??
    (await vscode.window.showInputBox({
      prompt: 'The join URL the host shared',
      placeHolder: 'ws://HOST:PORT/ROOM?secret=SECRET',
      ignoreFocusOut: true,
      validateInput: (value) => {
        try {
          parseJoinArgument(value);
          return undefined;
        } catch (err) {
          return err instanceof JoinUrlError ? err.message : String(err);
        }
      },
    }));
  if (!text) {
    return;
  }
  let argument: string;
  try {
    argument = parseJoinArgument(text).argument;
  } catch (err) {
    void vscode.window.showErrorMessage(`collab: ${err instanceof Error ? err.message : String(err)}`);
    return;
  }
  await start({ join: argument });
}

async function stop(): Promise<void> {
  const c = client;
  client = undefined;
  role = null;
  connected = false;
  following = null;
  lastPeers = [];
  render();
  if (statusItem) {
    updateStatus();
  }
  if (c) {
    await c.stop().catch(() => undefined);
  }
}

async function execute(command: string, ...args: unknown[]): Promise<unknown> {
  if (!client) {
    void vscode.window.showWarningMessage('collab: no session (Collab: Share or Collab: Join first)');
    return undefined;
  }
  try {
    return await client.sendRequest('workspace/executeCommand', { command, arguments: args });
  } catch (err) {
    void vscode.window.showErrorMessage(`collab: ${command} failed: ${err instanceof Error ? err.message : String(err)}`);
    return undefined;
  }
}

async function announceUrl(): Promise<void> {
  for (let i = 0; i < 50 && client; i++) {
    const url = await execute(CMD_SHARE_URL);
    if (typeof url === 'string') {
      await vscode.env.clipboard.writeText(url);
      void vscode.window.showInformationMessage(`collab: sharing. Join URL copied: ${redactUrl(url)}`);
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function refreshStatus(): Promise<void> {
  const s = (await execute(CMD_STATUS)) as { role?: string; connected?: boolean } | undefined;
  if (s && typeof s === 'object') {
    connected = s.connected === true;
  }
  updateStatus();
}

function setFollowing(name: string | null): void {
  following = name;
  updateStatus();
}

function updateStatus(): void {
  const status: SessionStatus | null = role ? { role, connected, peers: lastPeers.length, following } : null;
  statusItem.text = statusText(status);
  statusItem.tooltip = role ? 'collab-ls: click for the peers' : 'collab-ls: Collab: Share or Collab: Join';
}

async function pickPeer(placeHolder: string): Promise<string | undefined> {
  const peers = (await execute(CMD_PEERS)) as { name: string; self?: boolean; document?: string | null }[] | undefined;
  if (!Array.isArray(peers)) {
    return undefined;
  }
  const items = peers
    .filter((p) => !p.self)
    .map((p) => ({ label: p.name, description: p.document ?? '(no shared file)' }));
  if (items.length === 0) {
    void vscode.window.showInformationMessage('collab: nobody else is in the session');
    return undefined;
  }
  return (await vscode.window.showQuickPick(items, { placeHolder }))?.label;
}

async function follow(): Promise<void> {
  const name = await pickPeer('Follow whom?');
  if (name && (await execute(CMD_FOLLOW, name))) {
    setFollowing(name);
  }
}

async function showPeers(): Promise<void> {
  if (!client) {
    void vscode.window.showInformationMessage('collab: no session (Collab: Share or Collab: Join)');
    return;
  }
  const name = await pickPeer('Peers (pick one to follow)');
  if (name && (await execute(CMD_FOLLOW, name))) {
    setFollowing(name);
  }
}

async function chat(): Promise<void> {
  const text = await vscode.window.showInputBox({ prompt: 'Message to everyone in the session' });
  if (text) {
    await execute(CMD_CHAT, text);
  }
}

function toRange(r: { start: { line: number; character: number }; end: { line: number; character: number } }): vscode.Range {
  return new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
}

function typesFor(colour: string, label: string): { cursor: vscode.TextEditorDecorationType; selection: vscode.TextEditorDecorationType } {
  const key = `${colour}\u0000${label}`;
  let types = decorationTypes.get(key);
  if (!types) {
    types = {
      cursor: vscode.window.createTextEditorDecorationType({
        border: `solid ${colour}`,
        borderWidth: '0 0 0 2px',
        after: {
          contentText: ` ${label}`,
          color: '#ffffff',
          backgroundColor: colour,
          margin: '0 0 0 2px',
        },
        rangeBehavior: vscode.DecorationRangeBehavior.ClosedClosed,
      }),
      selection: vscode.window.createTextEditorDecorationType({ backgroundColor: `${colour}40` }),
    };
    decorationTypes.set(key, types);
  }
  return types;
}

function render(): void {
  const byUri = decorationsByUri(lastPeers);
  const used = new Set<string>();
  for (const editor of vscode.window.visibleTextEditors) {
    const here = byUri.get(editor.document.uri.toString()) ?? [];
    const applied = new Set<string>();
    for (const d of here) {
      const types = typesFor(d.colour, d.label);
      const key = `${d.colour}\u0000${d.label}`;
      applied.add(key);
      used.add(key);
      editor.setDecorations(types.cursor, d.cursors.map(toRange));
      editor.setDecorations(types.selection, d.selections.map(toRange));
    }
    for (const [key, types] of decorationTypes) {
      if (!applied.has(key)) {
        editor.setDecorations(types.cursor, []);
        editor.setDecorations(types.selection, []);
      }
    }
  }
  for (const [key, types] of decorationTypes) {
    if (!used.has(key)) {
      types.cursor.dispose();
      types.selection.dispose();
      decorationTypes.delete(key);
    }
  }
}

function scheduleCursor(editor: vscode.TextEditor): void {
  if (!client || editor.document.uri.scheme !== 'file') {
    return;
  }
  if (cursorTimer) {
    clearTimeout(cursorTimer);
  }
  cursorTimer = setTimeout(() => {
    cursorTimer = undefined;
    void client?.sendNotification(NOTIFY_CURSOR, {
      uri: editor.document.uri.toString(),
      ranges: editor.selections.map((s) => ({
        start: { line: s.anchor.line, character: s.anchor.character },
        end: { line: s.active.line, character: s.active.character },
      })),
    });
  }, 50);
}
