/**
 * The session transport between a TV and its constellation shard: one long-lived connection
 * carrying whole binary frames both ways, over WebTransport (HTTP/3 when its native addon loads,
 * HTTP/2 otherwise), raw QUIC, or an in-process pair for tests. The sync protocol sits on top and
 * never sees which one it runs on.
 *
 * On the wire (the same for every transport, so a browser client can speak it too): the client
 * opens one bidirectional stream and keeps it for the session; every frame is a 4-byte big-endian
 * length and that many bytes; the first frame each way is the ASCII hello "omega-sync/1", and the
 * client's connect completes only on the server's hello, that is once the server has accepted it.
 * Closing sends FIN and waits (up to a second) for the peer's FIN, so that nothing sent is lost.
 */
import { Context, Effect, Layer } from "effect"
import type { Scope, Stream } from "effect"
import { make as makeMemory } from "./internal/Memory.ts"
export { MAX_FRAME_BYTES } from "./internal/Framing.ts"
import { isQuicPeerId, type QuicIdentity } from "./QuicIdentity.ts"
import { TransportError } from "./TransportError.ts"

/** Who is at the other end, as far as the transport knows. */
export interface PeerInfo {
  /** "host:port" of the peer, when the transport reports it. */
  readonly address?: string
  /** QUIC: the peer's authenticated peer id (a device's identity on the server side). */
  readonly deviceKey?: string
  /** WebTransport: the request path, without the query. */
  readonly path?: string
  /** WebTransport: the query parameters of the request (the place for device credentials). */
  readonly query?: Readonly<Record<string, string>>
}

/** One session carrying whole frames both ways. */
export interface Connection {
  readonly id: string
  readonly peer: PeerInfo
  /** Queues one frame; fails on a frame over the size limit (the connection stays up) or a closed one. */
  readonly send: (frame: Uint8Array) => Effect.Effect<void, TransportError>
  /** The peer's frames in order; ends when either side closes, fails when the connection breaks. Read it once. */
  readonly incoming: Stream.Stream<Uint8Array, TransportError>
  /** Delivers what was sent, then ends the session; waits at most a second for the peer. Idempotent. */
  readonly close: Effect.Effect<void>
}

export interface ListenOptions {
  /** Default "127.0.0.1". */
  readonly host?: string
  /** Default 0: any free port, reported by the listener. */
  readonly port?: number
  /** WebTransport: the path sessions are accepted on (default "/sync"). */
  readonly path?: string
  /** WebTransport: the server's PEM certificate and private key. */
  readonly certificate?: { readonly certificate: string; readonly privateKey: string }
  /** QUIC: the server's identity; clients pin its peer id. */
  readonly identity?: QuicIdentity
  /** Largest frame accepted from a client (default MAX_FRAME_BYTES); a larger one closes the connection. */
  readonly maxFrameBytes?: number
  /** Decides whether a client may connect, before its connection reaches the handler. */
  readonly authorize?: (peer: PeerInfo) => Effect.Effect<boolean>
}

export interface ConnectOptions {
  readonly host: string
  readonly port: number
  /** WebTransport: request path (default "/sync"). */
  readonly path?: string
  /** WebTransport: query parameters, for example a device token. */
  readonly query?: Readonly<Record<string, string>>
  /** WebTransport: SHA-256 of the server's DER certificate to pin; without it the CA chain is checked. */
  readonly certificateHash?: Uint8Array
  /** QUIC: the peer id the server must prove (required). */
  readonly serverPeerId?: string
  /** QUIC: this device's identity (default: a new random one). */
  readonly identity?: QuicIdentity
  /** Largest frame accepted from the server (default MAX_FRAME_BYTES). */
  readonly maxFrameBytes?: number
  /** Time allowed for the whole handshake (default 5000 ms). */
  readonly timeoutMs?: number
}

export interface Listener {
  readonly host: string
  readonly port: number
}

export type TransportKind = "webtransport-h3" | "webtransport-h2" | "quic" | "memory"

export interface WebTransportOptions {
  /** Use HTTP/3 when its native addon loads (default true); HTTP/2 is the fallback either way. */
  readonly http3?: boolean
}

export interface QuicOptions {
  /** Close a connection after this long without packets (default 30 s). */
  readonly maxIdleTimeoutMs?: number
  /** Send keep-alives this often, below the idle timeout and NAT timeouts (default 10 s). */
  readonly keepAliveIntervalMs?: number
}

export class SyncTransport extends Context.Service<SyncTransport, {
  readonly kind: TransportKind
  /**
   * Accepts connections until the scope closes. `onConnection` runs for each connection's lifetime:
   * the connection is closed when it returns or fails, and it is interrupted when the listener stops.
   */
  readonly listen: <E, R>(
    options: ListenOptions,
    onConnection: (connection: Connection) => Effect.Effect<void, E, R>
  ) => Effect.Effect<Listener, TransportError, Scope.Scope | R>
  /** A connection to a server, closed with the scope. */
  readonly connect: (options: ConnectOptions) => Effect.Effect<Connection, TransportError, Scope.Scope>
}>()("omega/sync/SyncTransport") {
  /** WebTransport over HTTP/3, or HTTP/2 where the HTTP/3 addon is missing (as it is here). */
  static readonly layerWebTransport = (options: WebTransportOptions = {}): Layer.Layer<SyncTransport, TransportError> =>
    Layer.effect(
      SyncTransport,
      Effect.flatMap(load("WebTransport", () => import("./internal/WebTransport.ts")), (m) => m.make(options))
    )

  /** Raw QUIC (quinn, through @chainsafe/libp2p-quic's native binding), with Ed25519 peer ids. */
  static readonly layerQuic = (options: QuicOptions = {}): Layer.Layer<SyncTransport, TransportError> =>
    Layer.effect(
      SyncTransport,
      Effect.flatMap(load("QUIC", () => import("./internal/Quic.ts")), (m) => m.make(options))
    )

  /** Clients and servers wired together in this process, with the same framing, limits and checks. */
  static readonly layerMemory: Layer.Layer<SyncTransport> = Layer.effect(SyncTransport, makeMemory)

  static readonly layerTest = SyncTransport.layerMemory
}

/** The two network transports a TV picks between (the in-memory one is for tests). */
export type NetworkTransport = "quic" | "webtransport"

/** A transport by name, as configuration gives it; "memory" wires peers of one process together. */
export type TransportChoice = NetworkTransport | "memory"

/** The SyncTransport layer `choice` names. */
export const transportLayer = (choice: TransportChoice): Layer.Layer<SyncTransport, TransportError> =>
  choice === "quic" ?
    SyncTransport.layerQuic() :
    choice === "memory" ?
    SyncTransport.layerMemory :
    SyncTransport.layerWebTransport()

/**
 * Where a TV connects, from the pin its shard prints at start-up: on QUIC the shard's peer id,
 * on WebTransport the SHA-256 of its certificate as 64 hex digits.
 */
export const pinnedEndpoint = (options: {
  readonly transport: NetworkTransport
  readonly host: string
  readonly port: number
  readonly pin: string
}): Effect.Effect<ConnectOptions, TransportError> => {
  const pin = options.pin.trim()
  const invalid = (message: string) => Effect.fail(new TransportError({ reason: "invalid-options", message }))
  if (options.transport === "quic") {
    return isQuicPeerId(pin) ?
      Effect.succeed({ host: options.host, port: options.port, serverPeerId: pin }) :
      invalid("a QUIC pin is the shard's peer id, \"12D3KooW\" and 44 more characters (its start-up log prints it)")
  }
  return /^[0-9a-f]{64}$/i.test(pin) ?
    Effect.succeed({ host: options.host, port: options.port, certificateHash: Buffer.from(pin, "hex") }) :
    invalid(
      "a WebTransport pin is the SHA-256 of the shard's certificate as 64 hex digits (its start-up log prints it)"
    )
}

// Transports are loaded on first use, so importing this package loads no native binding.
const load = <A>(name: string, f: () => Promise<A>) =>
  Effect.tryPromise({
    try: f,
    catch: (cause) =>
      new TransportError({
        reason: "unavailable",
        message: `the ${name} transport failed to load: ${cause instanceof Error ? cause.message : String(cause)}`
      })
  })
