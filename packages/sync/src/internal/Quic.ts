/**
 * Raw QUIC through quinn. Both sides present Ed25519 identities in the TLS handshake, so the
 * server learns each device's peer id without a token, and a client pins the server's peer id.
 * One client endpoint (UDP socket) per identity: a TV has one identity and one session; a load
 * generator that gives many simulated sessions one identity multiplexes them over one socket
 * (quinn dials any number of connections from an endpoint). The binding has no graceful close,
 * so close waits for the peer's FIN (see FramedConnection) before it aborts.
 */
import { Effect } from "effect"
import * as Dns from "node:dns/promises"
import * as Net from "node:net"
import { makeQuicIdentity } from "../QuicIdentity.ts"
import type { QuicIdentity } from "../QuicIdentity.ts"
import type { ConnectOptions, ListenOptions, QuicOptions, SyncTransport } from "../SyncTransport.ts"
import { TransportError } from "../TransportError.ts"
import { defaultReceiveBufferBytes, RECOMMENDED_RECEIVE_BUFFER_BYTES } from "../UdpBuffers.ts"
import type { Accepted, ByteChannel } from "./FramedConnection.ts"
import { closedError, connectFramed, frameLimit, serveFramed } from "./FramedConnection.ts"
import type { NativeClient, NativeConnection, NativeStream, QuicNative } from "./QuicNative.ts"
import { addressOfMultiaddr, loadQuicNative, peerIdOfMultiaddr } from "./QuicNative.ts"

// The binding copies each read into a new buffer of the size asked for: reads are sized by what
// the frame being read still lacks, within these bounds (small frames are most of the traffic).
const MIN_READ_BYTES = 2 * 1024
const MAX_READ_BYTES = 64 * 1024
/** Handshakes the server runs at once. */
const ACCEPTORS = 32

export const make = (options: QuicOptions): Effect.Effect<SyncTransport["Service"], TransportError> =>
  Effect.gen(function*() {
    const native = yield* Effect.tryPromise({
      try: loadQuicNative,
      catch: (cause) =>
        new TransportError({
          reason: "unavailable",
          message: `the QUIC binding did not load: ${cause instanceof Error ? cause.message : String(cause)}`
        })
    })
    const config = quinnConfig(native, options)
    const endpoints = clientEndpoints(native, config)

    const listen: SyncTransport["Service"]["listen"] = (listenOptions: ListenOptions, onConnection) =>
      Effect.gen(function*() {
        const identity = listenOptions.identity
        if (identity === undefined) {
          return yield* new TransportError({ reason: "invalid-options", message: "a QUIC server needs an identity" })
        }
        const maxFrameBytes = yield* frameLimit(listenOptions.maxFrameBytes)
        const host = listenOptions.host ?? "127.0.0.1"
        const server = yield* Effect.acquireRelease(
          Effect.try({
            try: () => new native.Server(config(identity), host, listenOptions.port ?? 0),
            catch: (cause) =>
              new TransportError({ reason: "listen-failed", message: `cannot listen on ${host}: ${String(cause)}` })
          }),
          (bound) => Effect.promise(() => bound.abort().catch(() => undefined))
        )
        const receiveBuffer = defaultReceiveBufferBytes()
        if (receiveBuffer !== undefined && receiveBuffer < RECOMMENDED_RECEIVE_BUFFER_BYTES) {
          yield* Effect.logWarning(
            `QUIC: the server socket gets the kernel's default receive buffer, net.core.rmem_default = ${receiveBuffer} bytes; ` +
              `with thousands of sessions datagrams will be dropped and latency will spike. ` +
              `Raise it to ${RECOMMENDED_RECEIVE_BUFFER_BYTES} (sysctl -w net.core.rmem_default=${RECOMMENDED_RECEIVE_BUFFER_BYTES}, on the node)`
          )
        }
        yield* serveFramed({
          accept: Effect.tryPromise({ try: () => server.inboundConnection(), catch: closedError }).pipe(
            Effect.map(accepted)
          ),
          listen: listenOptions,
          maxFrameBytes,
          authorizeHere: true,
          // The binding's inboundConnection completes the handshake before it returns.
          acceptors: ACCEPTORS,
          onConnection
        })
        return { host, port: server.port() }
      })

    const connect = (connectOptions: ConnectOptions) =>
      Effect.gen(function*() {
        const serverPeerId = connectOptions.serverPeerId
        if (serverPeerId === undefined) {
          return yield* new TransportError({
            reason: "invalid-options",
            message: "a QUIC client must pin the server's peer id (serverPeerId)"
          })
        }
        const maxFrameBytes = yield* frameLimit(connectOptions.maxFrameBytes)
        const identity = connectOptions.identity ?? makeQuicIdentity()
        const { host, port } = connectOptions
        const open = Effect.gen(function*() {
          const ip = yield* resolve(host)
          const client = yield* endpoints.acquire(identity, Net.isIPv6(ip) ? 1 : 0).pipe(
            Effect.mapError((cause) => connectFailed(host, port, cause))
          )
          const connection = yield* Effect.tryPromise({
            try: () => client.outboundConnection(ip, port),
            catch: (cause) => connectFailed(host, port, cause)
          })
          const abort = () => quietly(() => connection.abort())
          yield* Effect.addFinalizer(() => Effect.sync(abort))
          const peerId = peerIdOfMultiaddr(connection.remoteMultiaddr())
          if (peerId !== serverPeerId) {
            return yield* new TransportError({
              reason: "untrusted-server",
              message: `the server at ${host}:${port} is ${peerId}, not the pinned ${serverPeerId}`
            })
          }
          const stream = yield* Effect.tryPromise({ try: () => connection.outboundStream(), catch: closedError })
          return { channel: streamChannel(stream, abort), peer: { address: `${host}:${port}`, deviceKey: peerId } }
        })
        return yield* connectFramed({ open, maxFrameBytes, timeoutMs: connectOptions.timeoutMs })
      })

    return { kind: "quic", listen, connect }
  })

/**
 * Client endpoints shared by identity and address family, reference-counted: the socket closes
 * with the last connection that uses it.
 */
const clientEndpoints = (native: QuicNative, config: (identity: QuicIdentity) => object) => {
  const open = new Map<string, { readonly client: NativeClient; users: number }>()
  return {
    acquire: (identity: QuicIdentity, family: 0 | 1) =>
      Effect.acquireRelease(
        Effect.try(() => {
          const key = `${identity.peerId}/${family}`
          let endpoint = open.get(key)
          if (endpoint === undefined) {
            endpoint = { client: new native.Client(config(identity), family), users: 0 }
            open.set(key, endpoint)
          }
          endpoint.users += 1
          return { key, endpoint }
        }),
        ({ endpoint, key }) =>
          Effect.sync(() => {
            endpoint.users -= 1
            if (endpoint.users > 0) return
            open.delete(key)
            quietly(() => endpoint.client.abort())
          })
      ).pipe(Effect.map(({ endpoint }) => endpoint.client))
  }
}

/** The transport's quinn settings for an identity (also what `throughput.ts` drives the binding with). */
export const quinnConfig = (native: QuicNative, options: QuicOptions) => (identity: QuicIdentity) =>
  new native.QuinnConfig({
    privateKeyProto: identity.privateKey,
    handshakeTimeout: 5_000,
    maxIdleTimeout: options.maxIdleTimeoutMs ?? 30_000,
    keepAliveInterval: options.keepAliveIntervalMs ?? 10_000,
    // One stream per connection is all this uses; the limit caps what a peer may open.
    maxConcurrentStreamLimit: 4,
    maxStreamData: 2 * 1024 * 1024,
    maxConnectionData: 4 * 1024 * 1024,
    receiveBufferSize: 4 * 1024 * 1024,
    sendBufferSize: 4 * 1024 * 1024
  })

const accepted = (connection: NativeConnection): Accepted => {
  const multiaddr = connection.remoteMultiaddr()
  const abort = () => quietly(() => connection.abort())
  const address = addressOfMultiaddr(multiaddr)
  const deviceKey = peerIdOfMultiaddr(multiaddr)
  return {
    peer: { ...(address !== undefined && { address }), ...(deviceKey !== undefined && { deviceKey }) },
    open: Effect.tryPromise({ try: () => connection.inboundStream(), catch: closedError }).pipe(
      Effect.map((stream) => streamChannel(stream, abort))
    ),
    abort
  }
}

const streamChannel = (stream: NativeStream, abort: () => void): ByteChannel => ({
  read: async (wanted) => (await stream.read(Math.min(MAX_READ_BYTES, Math.max(MIN_READ_BYTES, wanted)))) ?? undefined,
  write: (bytes) => stream.write(bytes),
  finish: () => stream.finishWrite(),
  abort
})

// The binding dials IP addresses only.
const resolve = (host: string) =>
  Net.isIP(host) !== 0
    ? Effect.succeed(host)
    : Effect.tryPromise({
      try: () => Dns.lookup(host).then((found) => found.address),
      catch: (cause) => connectFailed(host, 0, cause)
    })

const connectFailed = (host: string, port: number, cause: unknown) =>
  new TransportError({
    reason: "connect-failed",
    message: `cannot reach ${host}:${port}: ${cause instanceof Error ? cause.message : String(cause)}`
  })

const quietly = (f: () => void) => {
  try {
    f()
  } catch {
    // already closed
  }
}
