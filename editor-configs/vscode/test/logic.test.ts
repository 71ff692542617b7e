// Unit tests of src/logic.ts, run by Node's built-in test runner (npm test).
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  JoinUrlError,
  chatLine,
  decorationsByUri,
  joinsWithoutCheckout,
  languageServerCommand,
  parseJoinArgument,
  parseJoinUrl,
  peerDecorations,
  redactUrl,
  serverArgs,
  statusText,
} from '../src/logic';

describe('parseJoinUrl', () => {
  it('parses what collab-ls --share prints', () => {
    const u = parseJoinUrl(' ws://127.0.0.1:46605/8rMBTf6y5vy72qtvF9cKgA?secret=gqsAuiIkv5M7IeX_ji77XQ ');
    assert.deepEqual(u, {
      url: 'ws://127.0.0.1:46605/8rMBTf6y5vy72qtvF9cKgA?secret=gqsAuiIkv5M7IeX_ji77XQ',
      scheme: 'ws',
      host: '127.0.0.1',
      port: 46605,
      room: '8rMBTf6y5vy72qtvF9cKgA',
      secret: 'gqsAuiIkv5M7IeX_ji77XQ',
      readOnly: false,
    });
  });

  it('defaults the port by scheme, reads IPv6 hosts and the read-only hint', () => {
    assert.equal(parseJoinUrl('wss://relay.example/room?secret=s').port, 443);
    assert.equal(parseJoinUrl('ws://relay.example/room?secret=s').port, 80);
    const v6 = parseJoinUrl('ws://[::1]:9000/r?secret=s&access=read-only');
    assert.equal(v6.host, '::1');
    assert.equal(v6.readOnly, true);
  });

  for (const [url, reason] of [
    ['http://h:1/r?secret=s', /scheme must be ws:\/\/ or wss:\/\/, not "http"/],
    ['ws://h:1/?secret=s', /no room/],
    ['ws://h:1/r', /no secret/],
    ['ws://h:1/r?secret=', /no secret/],
    ['not a url', /expected ws:\/\/HOST:PORT\/ROOM\?secret=SECRET/],
  ] as const) {
    it(`refuses ${url}`, () => {
      assert.throws(() => parseJoinUrl(url), (err: unknown) => err instanceof JoinUrlError && reason.test(err.message));
    });
  }
});

describe('parseJoinArgument', () => {
  it('takes several URLs of one room, separated by commas', () => {
    const r = parseJoinArgument('ws://a:1/room?secret=s, ws://b:2/room?secret=s,');
    assert.equal(r.argument, 'ws://a:1/room?secret=s,ws://b:2/room?secret=s');
    assert.deepEqual(r.urls.map((u) => u.host), ['a', 'b']);
  });

  it('refuses nothing, and URLs of different rooms', () => {
    assert.throws(() => parseJoinArgument(' , '), /no join URL/);
    assert.throws(() => parseJoinArgument('ws://a:1/one?secret=s,ws://b:2/two?secret=s'), /different rooms: one, two/);
  });
});

describe('redactUrl', () => {
  it('hides the secret only', () => {
    assert.equal(redactUrl('ws://h:1/r?secret=abc&access=read-only'), 'ws://h:1/r?secret=…&access=read-only');
  });
});

const URI = 'file:///p/notes/today.txt';

describe('peerDecorations', () => {
  it('turns a $/collab/peers entry into a cursor at the head and an ordered selection', () => {
    const params = {
      peers: [
        {
          id: 7,
          name: 'alice',
          colour: '#3cb44b',
          document: 'notes/today.txt',
          uri: URI,
          // A backward selection: the anchor (start) after the cursor (end).
          ranges: [{ start: { line: 2, character: 9 }, end: { line: 1, character: 4 } }],
          cursor: { line: 1, character: 4 },
        },
      ],
    };
    assert.deepEqual(peerDecorations(params), [
      {
        uri: URI,
        name: 'alice',
        colour: '#3cb44b',
        label: 'alice',
        cursors: [{ start: { line: 1, character: 4 }, end: { line: 1, character: 4 } }],
        selections: [{ start: { line: 1, character: 4 }, end: { line: 2, character: 9 } }],
      },
    ]);
  });

  it('draws no selection for an empty range, one cursor per range', () => {
    const [d] = peerDecorations({
      peers: [
        {
          id: 1,
          name: 'bob',
          colour: '#112233',
          uri: URI,
          ranges: [
            { start: { line: 0, character: 1 }, end: { line: 0, character: 1 } },
            { start: { line: 3, character: 0 }, end: { line: 3, character: 2 } },
          ],
        },
      ],
    });
    assert.equal(d.cursors.length, 2);
    assert.deepEqual(d.selections, [{ start: { line: 3, character: 0 }, end: { line: 3, character: 2 } }]);
  });

  it('skips peers in no shared file and malformed ranges; fixes bad colours', () => {
    const out = peerDecorations({
      peers: [
        { id: 1, name: 'away', colour: '#000000', document: null, uri: null, ranges: [], cursor: null },
        { id: 2, name: 'broken', colour: '#000000', uri: URI, ranges: [{ start: { line: -1, character: 0 }, end: {} }] },
        { id: 3, name: 'odd', colour: 'red; injected', uri: URI, ranges: [{ start: { line: 0, character: 0 }, end: { line: 0, character: 0 } }] },
        null,
      ],
    });
    assert.deepEqual(out.map((d) => [d.name, d.colour]), [['odd', '#ff8c00']]);
  });

  it('tells apart peers with the same name', () => {
    const at = { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } };
    const out = peerDecorations({
      peers: [
        { id: 5393531361244834, name: 'root', colour: '#3cb44b', uri: URI, ranges: [at] },
        { id: 7637503120705764, name: 'root', colour: '#3cb44b', uri: 'file:///p/b.txt', ranges: [at] },
      ],
    });
    assert.deepEqual(out.map((d) => d.label), ['root (4834)', 'root (5764)']);
    assert.deepEqual([...decorationsByUri(out).keys()], [URI, 'file:///p/b.txt']);
  });

  it('accepts nothing that is not a peers notification', () => {
    assert.deepEqual(peerDecorations(null), []);
    assert.deepEqual(peerDecorations({ peers: 'x' }), []);
  });
});

describe('statusText, serverArgs, languageServerCommand, chatLine', () => {
  it('shows role, link and peers', () => {
    assert.equal(statusText(null), '$(broadcast) collab: off');
    assert.equal(statusText({ role: 'host', connected: true, peers: 1 }), '$(broadcast) collab host: 1 peer');
    assert.equal(
      statusText({ role: 'guest', connected: false, peers: 2, following: 'alice' }),
      '$(debug-disconnect) collab guest (disconnected): 2 peers, following alice',
    );
  });

  it('builds collab-ls arguments', () => {
    assert.deepEqual(serverArgs({ share: true }), ['--share']);
    assert.deepEqual(serverArgs({ share: true, relay: 'ws://r:1' }, { name: 'ann' }), ['--share', '--relay', 'ws://r:1', '--name', 'ann']);
    assert.deepEqual(serverArgs({ join: 'ws://h:1/r?secret=s' }, { logFile: '/tmp/l' }), ['--join', 'ws://h:1/r?secret=s', '--log-file', '/tmp/l']);
  });

  it('puts the shared language server last, after --, and only when sharing', () => {
    assert.deepEqual(serverArgs({ share: true }, { languageServer: ['pylsp'] }), ['--share', '--', 'pylsp']);
    // Its own options stay after `--` (they are the server's, not collab-ls's).
    assert.deepEqual(
      serverArgs(
        { share: true, relay: 'ws://r:1' },
        { name: 'ann', logFile: '/tmp/l', languageServer: ['clangd', '--background-index', '--log=verbose'] },
      ),
      ['--share', '--relay', 'ws://r:1', '--name', 'ann', '--log-file', '/tmp/l', '--', 'clangd', '--background-index', '--log=verbose'],
    );
    assert.deepEqual(serverArgs({ share: true }, { languageServer: [] }), ['--share']);
    // A guest's requests go to the host's server: joining never passes one.
    const join = serverArgs({ join: 'ws://h:1/r?secret=s' }, { name: 'bo', languageServer: ['pylsp'] });
    assert.deepEqual(join, ['--join', 'ws://h:1/r?secret=s', '--name', 'bo']);
    assert.ok(!join.includes('--'));
    // A guest with no checkout: the host's project is mirrored into the folder.
    assert.deepEqual(serverArgs({ join: 'ws://h:1/r?secret=s', workspace: '/w/p' }), [
      '--join',
      'ws://h:1/r?secret=s',
      '--workspace',
      '/w/p',
    ]);
  });

  it('mirrors the host project into an empty folder only, unless told', () => {
    assert.ok(joinsWithoutCheckout(undefined, []));
    assert.ok(joinsWithoutCheckout('ifEmpty', ['.vscode', '.git']));
    assert.ok(!joinsWithoutCheckout('ifEmpty', ['.vscode', 'main.py']));
    assert.ok(joinsWithoutCheckout('always', ['main.py']));
    assert.ok(!joinsWithoutCheckout('never', []));
  });

  it('reads the collab.languageServer setting', () => {
    assert.deepEqual(languageServerCommand(['python3', '-m', 'pylsp']), ['python3', '-m', 'pylsp']);
    assert.deepEqual(languageServerCommand('pylsp'), ['pylsp']);
    for (const unset of [undefined, null, '', []]) {
      assert.equal(languageServerCommand(unset), undefined);
    }
    for (const bad of [['pylsp', ''], ['pylsp', 3], { command: 'pylsp' }, 42]) {
      assert.throws(() => languageServerCommand(bad), /collab\.languageServer must be a command like \["pylsp"\]/);
    }
    // A copy: changing the result does not change the setting's value.
    const value = ['pylsp'];
    languageServerCommand(value)?.push('x');
    assert.deepEqual(value, ['pylsp']);
  });

  it('shows others\' chat, not one\'s own', () => {
    assert.equal(chatLine({ name: 'ann', colour: '#000000', text: 'hi', time: 1, self: false }), '[ann] hi');
    assert.equal(chatLine({ name: 'me', text: 'hi', self: true }), null);
    assert.equal(chatLine({}), null);
  });
});
