/**
 * Transport throughput on loopback: N connections each send a frame and wait for a small answer,
 * in a closed loop for a bounded time; the server runs in a child process, as a shard does. It
 * shows what the transport alone allows before any sync work, and what this package's framing and
 * fibers add on top of the QUIC binding:
 *
 *   node packages/sync/src/throughput.ts [--json] [--stacks=binding,transport]
 *        [--connections=2000] [--seconds=10] [--up=330] [--down=40]
 *
 * `binding` drives @chainsafe/libp2p-quic's quinn binding directly, with the transport's own
 * quinn settings; `transport` goes through
 * SyncTransport.layerQuic (framing, hellos, queues, Effect fibers). On Linux it also reports the
 * UDP datagrams the kernel dropped because a socket's receive buffer was full (RcvbufErrors in
 * /proc/net/snmp): the binding does not size its server socket, so the kernel's
 * net.core.rmem_default applies, and every drop costs a QUIC loss recovery (seconds of tail).
 */
import { Effect, Stream } from "effect"
import { fork } from "node:child_process"
import { encodeFrame } from "./internal/Framing.ts"
import { quinnConfig } from "./internal/Quic.ts"
import { loadQuicNative, type NativeStream } from "./internal/QuicNative.ts"
import { makeQuicIdentity } from "./QuicIdentity.ts"
import type { Connection } from "./SyncTransport.ts"
import { SyncTransport } from "./SyncTransport.ts"
import { countUdpDrops, defaultReceiveBufferBytes } from "./UdpBuffers.ts"

const flag = (name: string, fallback: string) =>
  process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback

type Stack = "binding" | "transport"
const STACKS: ReadonlyArray<Stack> = ["binding", "transport"]
/** Connections per client endpoint (UDP socket), as the load generator groups sessions. */
const PER_ENDPOINT = 250
/** The binding copies each read into a buffer of this size; frames here are small. */
const READ = 2 * 1024

/** Child process: serves one stack, answers every frame of `up` bytes with one of `down` bytes. */
const serve = async (stack: Stack, up: number, down: number) => {
  const identity = makeQuicIdentity()
  const started = process.cpuUsage()
  const startedAt = performance.now()
  process.on("message", () => {
    const used = process.cpuUsage(started)
    process.send!({
      cpuCores: (used.user + used.system) / 1e6 / ((performance.now() - startedAt) / 1000),
      rssMb: process.memoryUsage().rss / 2 ** 20
    })
  })
  if (stack === "binding") {
    const native = await loadQuicNative()
    const server = new native.Server(quinnConfig(native, {})(identity), "127.0.0.1", 0)
    process.send!({ port: server.port(), peerId: identity.peerId })
    const answer = encodeFrame(new Uint8Array(down).fill(9))
    const answerAll = async (stream: NativeStream) => {
      let buffered = 0
      for (;;) {
        const chunk = await stream.read(READ)
        if (chunk == null) return
        buffered += chunk.length
        while (buffered >= 4 + up) {
          buffered -= 4 + up
          await stream.write(answer)
        }
      }
    }
    for (;;) {
      const connection = await server.inboundConnection()
      void connection.inboundStream().then(answerAll).catch(() => undefined)
    }
  }
  const answer = new Uint8Array(down).fill(9)
  await Effect.runPromise(
    Effect.gen(function*() {
      const transport = yield* SyncTransport
      const listener = yield* transport.listen(
        { identity },
        (connection) => Stream.runForEach(connection.incoming, () => connection.send(answer))
      )
      process.send!({ port: listener.port, peerId: identity.peerId })
      return yield* Effect.never
    }).pipe(Effect.scoped, Effect.provide(SyncTransport.layerQuic()))
  )
}

interface Result {
  readonly stack: Stack
  readonly connections: number
  readonly syncsPerS: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly clientCores: number
  readonly serverCores: number
  /** The server process's RSS with every connection open (MB); compare runs with different N for per-connection memory. */
  readonly serverRssMb: number
  readonly udpDrops: number | undefined
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits

/** Runs the closed loop: every connection sends, waits for its answer, and sends again. */
const measure = async (stack: Stack, connections: number, seconds: number, up: number, down: number) => {
  const child = fork(new URL(import.meta.url).pathname, [`--serve=${stack}`, `--up=${up}`, `--down=${down}`], {
    execArgv: process.execArgv
  })
  const { peerId, port } = await new Promise<{ port: number; peerId: string }>((resolve) =>
    child.once("message", (message) => resolve(message as { port: number; peerId: string }))
  )
  const identities = Array.from({ length: Math.ceil(connections / PER_ENDPOINT) }, () => makeQuicIdentity())
  const latencies: Array<number> = []
  let deadline = Number.POSITIVE_INFINITY
  let cpuAtStart = process.cpuUsage()
  let startedAt = 0
  const begin = () => {
    cpuAtStart = process.cpuUsage()
    startedAt = performance.now()
    deadline = startedAt + seconds * 1000
  }
  const udpDrops = countUdpDrops()
  const connecting = performance.now()
  const announce = () =>
    process.stderr.write(
      `${stack}: ${connections} connections open in ${
        Math.round(performance.now() - connecting)
      } ms; ${seconds} s closed loop\n`
    )
  if (stack === "binding") {
    const native = await loadQuicNative()
    const clients = identities.map((identity) => new native.Client(quinnConfig(native, {})(identity), 0))
    const frame = encodeFrame(new Uint8Array(up).fill(7))
    const streams = await Promise.all(
      Array.from(
        { length: connections },
        (_, i) => clients[i % clients.length]!.outboundConnection("127.0.0.1", port).then((c) => c.outboundStream())
      )
    )
    const loop = async (stream: NativeStream) => {
      while (performance.now() < deadline) {
        const sent = performance.now()
        await stream.write(frame)
        let received = 0
        while (received < 4 + down) {
          const chunk = await stream.read(READ)
          if (chunk == null) return
          received += chunk.length
        }
        latencies.push(performance.now() - sent)
      }
    }
    announce()
    begin()
    await Promise.all(streams.map(loop))
    for (const client of clients) client.abort()
  } else {
    const frame = new Uint8Array(up).fill(7)
    const loop = (connection: Connection) =>
      Effect.gen(function*() {
        while (performance.now() < deadline) {
          const sent = performance.now()
          yield* connection.send(frame)
          yield* Stream.runHead(connection.incoming)
          latencies.push(performance.now() - sent)
        }
      })
    await Effect.runPromise(
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const opened = yield* Effect.forEach(
          Array.from({ length: connections }, (_, i) => i),
          (i) =>
            transport.connect({
              host: "127.0.0.1",
              port,
              serverPeerId: peerId,
              identity: identities[i % identities.length]!
            }),
          { concurrency: 200 }
        )
        announce()
        begin()
        yield* Effect.forEach(opened, loop, { concurrency: "unbounded", discard: true })
      }).pipe(Effect.scoped, Effect.provide(SyncTransport.layerQuic()))
    )
  }
  const elapsed = (performance.now() - startedAt) / 1000
  const used = process.cpuUsage(cpuAtStart)
  const drops = udpDrops()
  child.send("cpu")
  const server = await new Promise<{ cpuCores: number; rssMb: number }>((resolve) =>
    child.on("message", (message) => {
      if (typeof message === "object" && message !== null && "cpuCores" in message) {
        resolve(message as { cpuCores: number; rssMb: number })
      }
    })
  )
  child.kill()
  latencies.sort((a, b) => a - b)
  return {
    stack,
    connections,
    syncsPerS: Math.round(latencies.length / elapsed),
    p50Ms: round(percentile(latencies, 50), 2),
    p99Ms: round(percentile(latencies, 99), 2),
    clientCores: round((used.user + used.system) / 1e6 / elapsed, 2),
    serverCores: round(server.cpuCores, 2),
    serverRssMb: round(server.rssMb),
    udpDrops: drops
  } satisfies Result
}

const serving = flag("serve", "")
if (serving !== "") {
  await serve(serving as Stack, Number(flag("up", "330")), Number(flag("down", "40")))
} else {
  const connections = Number(flag("connections", "2000"))
  const seconds = Number(flag("seconds", "10"))
  const up = Number(flag("up", "330"))
  const down = Number(flag("down", "40"))
  const stacks = flag("stacks", STACKS.join(",")).split(",") as Array<Stack>
  const unknown = stacks.find((stack) => !STACKS.includes(stack))
  if (unknown !== undefined) throw new Error(`unknown stack ${unknown}; known: ${STACKS.join(", ")}`)
  const results: Array<Result> = []
  for (const stack of stacks) results.push(await measure(stack, connections, seconds, up, down))
  const rmemDefault = defaultReceiveBufferBytes()
  console.table(results)
  if (rmemDefault !== undefined) {
    console.log(`net.core.rmem_default = ${rmemDefault} bytes (the server socket's buffer)`)
  }
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify({ connections, seconds, up, down, rmem_default: rmemDefault ?? null, results }))
  }
  process.exit(0)
}
