// A Node Yjs client (the reference y-websocket provider) for interop tests.
//
// Document layout: a root Y.Map named "files" whose values are Y.Text keyed
// by workspace-relative path.
//
// usage: node yclient.mjs --server ws://HOST:PORT --room ROOM --secret SECRET
//          --path PATH [--wait-contains STRING] [--insert STRING]
//          [--awareness-name NAME] [--linger-ms N] [--timeout-ms N]
//
// Steps, in order: connect and wait for the first sync; with --awareness-name
// set the local awareness state {name}; with --wait-contains wait until the
// text at PATH contains STRING; with --insert append STRING to the text at
// PATH (creating the Y.Text if the map has none); wait until everything is
// sent, linger, print one JSON line {"text": ..., "awareness": [...]} on
// stdout and exit 0. Any failure or the timeout: a message on stderr, exit 1.

import { parseArgs } from 'node:util'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import ws from 'ws'

const { values: opts } = parseArgs({
  options: {
    server: { type: 'string' },
    room: { type: 'string' },
    secret: { type: 'string' },
    path: { type: 'string' },
    'wait-contains': { type: 'string' },
    insert: { type: 'string' },
    'awareness-name': { type: 'string' },
    'linger-ms': { type: 'string', default: '200' },
    'timeout-ms': { type: 'string', default: '15000' }
  }
})

for (const name of ['server', 'room', 'secret', 'path']) {
  if (opts[name] === undefined) {
    console.error(`yclient: --${name} is required`)
    process.exit(2)
  }
}

const fail = (message) => {
  console.error(`yclient: ${message}`)
  process.exit(1)
}

const timer = setTimeout(
  () => fail(`timed out after ${opts['timeout-ms']} ms`),
  Number(opts['timeout-ms'])
)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const doc = new Y.Doc()
const files = doc.getMap('files')
const provider = new WebsocketProvider(opts.server, opts.room, doc, {
  WebSocketPolyfill: ws,
  params: { secret: opts.secret },
  disableBc: true
})
provider.on('connection-close', (event) => {
  if (event && event.code === 4403) fail(`refused by the relay: ${event.reason}`)
})

const textAt = () => {
  const value = files.get(opts.path)
  return value instanceof Y.Text ? value.toString() : null
}

const until = (predicate) =>
  new Promise((resolve) => {
    if (predicate()) return resolve()
    const check = () => {
      if (predicate()) {
        doc.off('update', check)
        resolve()
      }
    }
    doc.on('update', check)
  })

await new Promise((resolve) => {
  if (provider.synced) return resolve()
  provider.on('sync', (synced) => synced && resolve())
})

if (opts['awareness-name'] !== undefined) {
  provider.awareness.setLocalState({ name: opts['awareness-name'] })
}

if (opts['wait-contains'] !== undefined) {
  const wanted = opts['wait-contains']
  await until(() => (textAt() ?? '').includes(wanted))
}

if (opts.insert !== undefined) {
  doc.transact(() => {
    let text = files.get(opts.path)
    if (!(text instanceof Y.Text)) {
      text = new Y.Text()
      files.set(opts.path, text)
    }
    text.insert(text.length, opts.insert)
  })
}

while (provider.ws !== null && provider.ws.bufferedAmount > 0) await sleep(10)
await sleep(Number(opts['linger-ms']))

const awareness = [...provider.awareness.getStates().entries()]
  .filter(([clientId]) => clientId !== doc.clientID)
  .map(([, state]) => state)
process.stdout.write(JSON.stringify({ text: textAt(), awareness }) + '\n')
clearTimeout(timer)
provider.destroy()
process.exit(0)
