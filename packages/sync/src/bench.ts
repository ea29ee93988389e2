/**
 * Transport benchmark over loopback: handshake latency, 1 KB echo round trips, and the time to
 * open many connections at once, for each SyncTransport layer. Server and clients share this
 * process (and its CPU), so the numbers are upper bounds for one side.
 *
 *   node packages/sync/src/bench.ts [--json] [--layers=memory,quic,webtransport]
 *        [--handshakes=30] [--echoes=300] [--connections=100]
 *
 * Prints a table; with --json the last line is the results as JSON.
 */
import { Effect, Layer, Stream } from "effect"
import { makeDevCertificate } from "./DevCertificate.ts"
import { makeQuicIdentity } from "./QuicIdentity.ts"
import type { Connection, ConnectOptions } from "./SyncTransport.ts"
import { SyncTransport } from "./SyncTransport.ts"
import type { TransportError } from "./TransportError.ts"

const flag = (name: string, fallback: string) =>
  process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback

const asJson = process.argv.includes("--json")
const handshakes = Number(flag("handshakes", "30"))
const echoes = Number(flag("echoes", "300"))
const connections = Number(flag("connections", "100"))
const layers: Record<string, Layer.Layer<SyncTransport, TransportError>> = {
  memory: SyncTransport.layerMemory,
  quic: SyncTransport.layerQuic(),
  webtransport: SyncTransport.layerWebTransport()
}
const selected = flag("layers", Object.keys(layers).join(",")).split(",")

interface Result {
  readonly layer: string
  readonly kind: string
  readonly handshakeP50Ms: number
  readonly handshakeP99Ms: number
  readonly echo1KbP50Ms: number
  readonly echo1KbP99Ms: number
  readonly connectionsSetupMs: number
  readonly connections: number
}

const percentile = (samples: ReadonlyArray<number>, p: number) => {
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN
}

const round = (ms: number) => Math.round(ms * 1000) / 1000

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    const value = yield* effect
    return [performance.now() - start, value] as const
  })

const echo = (connection: Connection) => connection.incoming.pipe(Stream.runForEach(connection.send))

const benchLayer = (name: string) =>
  Effect.gen(function*() {
    const transport = yield* SyncTransport
    const certificate = yield* makeDevCertificate()
    const identity = makeQuicIdentity()
    const listener = yield* transport.listen({
      certificate: { certificate: certificate.certificate, privateKey: certificate.privateKey },
      identity
    }, echo)
    const options: ConnectOptions = {
      host: "127.0.0.1",
      port: listener.port,
      certificateHash: certificate.sha256,
      serverPeerId: identity.peerId
    }
    const progress = (what: string) => Effect.sync(() => process.stderr.write(`${name}: ${what}\n`))

    yield* progress(`${handshakes} handshakes`)
    const handshakeMs: Array<number> = []
    for (let i = 0; i < handshakes; i++) {
      const [ms] = yield* Effect.scoped(timed(transport.connect(options)))
      handshakeMs.push(ms)
    }

    yield* progress(`${echoes} echoes of 1 KB`)
    const frame = new Uint8Array(1024).fill(7)
    const echoMs = yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* transport.connect(options)
      const samples: Array<number> = []
      for (let i = 0; i < echoes; i++) {
        const [ms] = yield* timed(Effect.andThen(connection.send(frame), Stream.runHead(connection.incoming)))
        samples.push(ms)
      }
      return samples
    }))

    yield* progress(`${connections} connections at once`)
    const [setupMs] = yield* Effect.scoped(
      timed(Effect.forEach(Array.from({ length: connections }), () => transport.connect(options), {
        concurrency: "unbounded"
      }))
    )

    return {
      layer: name,
      kind: transport.kind,
      handshakeP50Ms: round(percentile(handshakeMs, 50)),
      handshakeP99Ms: round(percentile(handshakeMs, 99)),
      echo1KbP50Ms: round(percentile(echoMs, 50)),
      echo1KbP99Ms: round(percentile(echoMs, 99)),
      connectionsSetupMs: round(setupMs),
      connections
    } satisfies Result
  }).pipe(Effect.scoped, Effect.provide(layers[name]!))

const program = Effect.gen(function*() {
  const results: Array<Result> = []
  for (const name of selected) {
    if (layers[name] === undefined) {
      return yield* Effect.die(new Error(`unknown layer ${name}; known: ${Object.keys(layers).join(", ")}`))
    }
    results.push(yield* benchLayer(name))
  }
  console.table(results.map(({ layer: _, ...row }) => row))
  if (asJson) console.log(JSON.stringify({ handshakes, echoes, connections, results }))
})

await Effect.runPromise(program)
// The WebTransport library leaves its HTTP/2 timers running after every session is closed, so the
// process would never end by itself (the CLI's NodeRuntime.runMain exits the same way).
process.exit(0)
