// Real sockets and real time: the shared layers run without the test clock (excludeTestServices).
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Scope, Stream } from "effect"
import { makeDevCertificate } from "./DevCertificate.ts"
import { makeQuicIdentity } from "./QuicIdentity.ts"
import type { Connection, ConnectOptions, Listener, ListenOptions, PeerInfo } from "./SyncTransport.ts"
import { SyncTransport } from "./SyncTransport.ts"
import type { TransportError } from "./TransportError.ts"

// The same behaviour is asked of every transport; each runs over loopback (memory in-process).
const transports: ReadonlyArray<readonly [string, Layer.Layer<SyncTransport, TransportError>]> = [
  ["memory", SyncTransport.layerMemory],
  ["quic", SyncTransport.layerQuic()],
  ["webtransport", SyncTransport.layerWebTransport()]
]

const WAIT = "3 seconds"

// Server credentials for every transport at once: each takes what it needs.
const credentials = Effect.gen(function*() {
  const certificate = yield* makeDevCertificate()
  const identity = makeQuicIdentity()
  const listen: ListenOptions = {
    certificate: { certificate: certificate.certificate, privateKey: certificate.privateKey },
    identity
  }
  const connect = (listener: Listener, extra: Partial<ConnectOptions> = {}): ConnectOptions => ({
    host: "127.0.0.1",
    port: listener.port,
    certificateHash: certificate.sha256,
    serverPeerId: identity.peerId,
    ...extra
  })
  return { listen, connect }
})

const bytes = (size: number, seed: number) => Uint8Array.from({ length: size }, (_, i) => (i * 31 + seed) & 0xff)

const echo = (connection: Connection) => connection.incoming.pipe(Stream.runForEach(connection.send))

const take = (connection: Connection, n: number) =>
  connection.incoming.pipe(Stream.take(n), Stream.runCollect, Effect.timeout(WAIT))

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b))

for (const [name, transportLayer] of transports) {
  layer(transportLayer, { excludeTestServices: true })(name, (it) => {
    it.effect("echoes 1 KB, 5 KB and 200 KB frames request by request", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const listener = yield* transport.listen(listen, echo)
        const connection = yield* transport.connect(connect(listener))
        for (const size of [1_000, 5_000, 200_000]) {
          const frame = bytes(size, size)
          yield* connection.send(frame)
          const [back] = yield* take(connection, 1)
          assert.isTrue(back !== undefined && sameBytes(back, frame), `${size}-byte frame came back intact`)
        }
      }))

    it.effect("the server pushes frames the client did not ask for", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const listener = yield* transport.listen(listen, (connection) =>
          Effect.gen(function*() {
            yield* connection.send(bytes(5_000, 1))
            yield* connection.send(bytes(10, 2))
            yield* Stream.runDrain(connection.incoming)
          }))
        const connection = yield* transport.connect(connect(listener))
        const frames = yield* take(connection, 2)
        assert.isTrue(sameBytes(frames[0]!, bytes(5_000, 1)))
        assert.isTrue(sameBytes(frames[1]!, bytes(10, 2)))
      }))

    it.effect("50 frames sent in a burst arrive whole and in order", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const listener = yield* transport.listen(listen, echo)
        const connection = yield* transport.connect(connect(listener))
        const sent = Array.from({ length: 50 }, (_, i) => bytes(1_000 + i * 37, i))
        yield* Effect.forEach(sent, connection.send, { discard: true })
        const received = yield* take(connection, 50)
        assert.strictEqual(received.length, 50)
        received.forEach((frame, i) => assert.isTrue(sameBytes(frame, sent[i]!), `frame ${i}`))
      }))

    it.effect("closing ends the peer's incoming, after the frames sent before it", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const serverSawEnd = yield* Deferred.make<number>()
        let served = 0
        const listener = yield* transport.listen(listen, (connection) =>
          Effect.gen(function*() {
            // The first connection is closed by its client, the second by the server.
            if (served++ === 1) {
              yield* connection.send(bytes(3_000, 9))
              return yield* connection.close
            }
            const frames = yield* Stream.runCollect(connection.incoming)
            yield* Deferred.succeed(serverSawEnd, frames.length)
          }))

        // Client closes: the server sees both frames, then the end of the stream.
        const client = yield* transport.connect(connect(listener))
        yield* client.send(bytes(100, 1))
        yield* client.send(bytes(100, 2))
        yield* client.close
        assert.strictEqual(yield* Deferred.await(serverSawEnd).pipe(Effect.timeout(WAIT)), 2)
        const afterClose = yield* Effect.flip(client.send(bytes(1, 0)))
        assert.strictEqual(afterClose.reason, "closed")

        // Server closes: the client gets the frame, then the end.
        const other = yield* transport.connect(connect(listener))
        const rest = yield* Stream.runCollect(other.incoming).pipe(Effect.timeout(WAIT))
        assert.strictEqual(rest.length, 1)
        assert.isTrue(sameBytes(rest[0]!, bytes(3_000, 9)))
      }))

    it.effect("closing while the peer has stopped reading (a write held by flow control) ends within the grace", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        // The server never reads: its incoming queue fills, then the transport's windows, then our
        // write blocks (memory, QUIC; the WebTransport library buffers what it is given instead).
        const listener = yield* transport.listen(listen, () => Effect.never)
        const scope = yield* Scope.make()
        const connection = yield* transport.connect(connect(listener)).pipe(Scope.provide(scope))
        const frame = bytes(100_000, 3)
        const sending = yield* Effect.forkChild(
          Effect.forEach(Array.from({ length: 200 }), () => connection.send(frame), { discard: true })
        )
        yield* Effect.sleep("500 millis")
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        const took = Date.now() - started
        assert.isBelow(took, 4_000, `close took ${took} ms`)
        yield* Fiber.interrupt(sending)
      }))

    it.effect("an oversized frame is refused on send, and a received one closes the connection", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const serverError = yield* Deferred.make<TransportError>()
        const listener = yield* transport.listen(
          { ...listen, maxFrameBytes: 1_024 },
          (connection) =>
            connection.incoming.pipe(
              Stream.runForEach(connection.send),
              Effect.catch((error) => Deferred.succeed(serverError, error))
            )
        )
        const connection = yield* transport.connect(connect(listener, { maxFrameBytes: 4_096 }))

        // Over the sender's own limit: refused locally, and the connection stays usable.
        const local = yield* Effect.flip(connection.send(new Uint8Array(4_097)))
        assert.strictEqual(local.reason, "frame-too-large")
        yield* connection.send(bytes(1_000, 3))
        const [back] = yield* take(connection, 1)
        assert.isTrue(sameBytes(back!, bytes(1_000, 3)))

        // Over the receiver's limit: the receiver fails with frame-too-large and drops the connection.
        yield* connection.send(new Uint8Array(2_000))
        const remote = yield* Deferred.await(serverError).pipe(Effect.timeout(WAIT))
        assert.strictEqual(remote.reason, "frame-too-large")
        const clientSide = yield* Stream.runCollect(connection.incoming).pipe(Effect.exit, Effect.timeout(WAIT))
        assert.isTrue(
          Exit.isFailure(clientSide) || clientSide.value.length === 0,
          "the client's incoming ends without more frames"
        )
      }))

    it.effect("a client refuses a server that does not prove the pinned identity", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const listener = yield* transport.listen(listen, echo)
        const stranger = yield* makeDevCertificate()
        const error = yield* Effect.flip(
          transport.connect(
            connect(listener, { certificateHash: stranger.sha256, serverPeerId: makeQuicIdentity().peerId })
          )
        )
        assert.strictEqual(error.reason, "untrusted-server")
      }))

    it.effect("authorize admits known devices, reports who they are, and refuses the others", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const device = makeQuicIdentity()
        const seen = yield* Deferred.make<PeerInfo>()
        // WebTransport identifies a device by its request (query), QUIC by its key; memory has both.
        const authorize = (peer: PeerInfo) =>
          Effect.succeed(peer.deviceKey === device.peerId || peer.query?.["device"] === "tv-1")
        const listener = yield* transport.listen(
          { ...listen, authorize },
          (connection) => Effect.andThen(Deferred.succeed(seen, connection.peer), echo(connection))
        )

        const admitted = yield* transport.connect(connect(listener, { identity: device, query: { device: "tv-1" } }))
        const peer = yield* Deferred.await(seen).pipe(Effect.timeout(WAIT))
        assert.isTrue(peer.deviceKey === device.peerId || peer.query?.["device"] === "tv-1")
        if (transport.kind === "quic") assert.strictEqual(admitted.peer.deviceKey, listen.identity?.peerId)

        const refused = yield* Effect.flip(
          transport.connect(connect(listener, { identity: makeQuicIdentity(), query: { device: "tv-2" } }))
        )
        assert.strictEqual(refused.reason, "rejected")
      }))

    it.effect("20 concurrent connections each get their own echo", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const listener = yield* transport.listen(listen, echo)
        const results = yield* Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) =>
            Effect.scoped(Effect.gen(function*() {
              const connection = yield* transport.connect(connect(listener))
              yield* connection.send(bytes(1_024, i))
              const [back] = yield* take(connection, 1)
              return back !== undefined && sameBytes(back, bytes(1_024, i))
            })),
          { concurrency: "unbounded" }
        )
        assert.deepStrictEqual(results, Array.from({ length: 20 }, () => true))
      }))

    it.effect("stopping the listener ends its connections, and then nothing is listening", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const listenerScope = yield* Scope.make()
        const listener = yield* transport.listen(listen, () => Effect.never).pipe(Scope.provide(listenerScope))
        const connection = yield* transport.connect(connect(listener))
        const stopping = yield* Effect.forkChild(Scope.close(listenerScope, Exit.void))
        const rest = yield* Stream.runCollect(connection.incoming).pipe(Effect.exit, Effect.timeout(WAIT))
        assert.isTrue(Exit.isFailure(rest) || rest.value.length === 0)
        yield* connection.close
        yield* Fiber.join(stopping).pipe(Effect.timeout(WAIT))

        const error = yield* Effect.flip(transport.connect(connect(listener, { timeoutMs: 500 })))
        // UDP gives no refusal, so QUIC can only time out.
        assert.include(["connect-failed", "timeout"], error.reason)
      }))

    it.effect("bad options and a taken port are typed errors", () =>
      Effect.gen(function*() {
        const transport = yield* SyncTransport
        const { connect, listen } = yield* credentials
        const badLimit = yield* Effect.flip(transport.listen({ ...listen, maxFrameBytes: -1 }, echo))
        assert.strictEqual(badLimit.reason, "invalid-options")
        if (transport.kind !== "memory") {
          const bare = yield* Effect.flip(transport.listen({}, echo))
          assert.strictEqual(bare.reason, "invalid-options")
        }
        const listener = yield* transport.listen(listen, echo)
        const taken = yield* Effect.flip(transport.listen({ ...listen, port: listener.port }, echo))
        assert.strictEqual(taken.reason, "listen-failed")
        if (transport.kind === "quic") {
          const { serverPeerId: _, ...unpinned } = connect(listener)
          const error = yield* Effect.flip(transport.connect(unpinned))
          assert.strictEqual(error.reason, "invalid-options")
        }
      }))
  })
}
