/**
 * WebTransport through @fails-components/webtransport: HTTP/3 when its native addon loads, and
 * HTTP/2 (WebTransport over a TLS TCP connection) otherwise. Choices forced by the library
 * (1.6.8), each a workaround for a bug found while evaluating it:
 * - only client-opened bidirectional streams (the server's first own stream can lose data), and
 *   one per session for its whole life (stream credit is not returned and stream maps leak);
 * - a request callback on the server (the path without one stalls after 16 KiB of upload);
 * - sessions are closed here when the server stops (`stopServer` leaves them open);
 * - each session is closed once (a second close() hangs the process, see closeSession).
 */
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Net from "node:net"
import * as Tls from "node:tls"
import type { ConnectOptions, ListenOptions, PeerInfo, SyncTransport, WebTransportOptions } from "../SyncTransport.ts"
import { TransportError } from "../TransportError.ts"
import type { Accepted, ByteChannel } from "./FramedConnection.ts"
import { closedError, connectFramed, frameLimit, serveFramed } from "./FramedConnection.ts"

// Windows well above one frame, so that a 256 KiB frame never waits for a window update.
const STREAM_WINDOW_BYTES = 1 << 20
const SESSION_WINDOW_BYTES = 4 << 20
const DEFAULT_PATH = "/sync"

// ---------------------------------------------------------------------------------------------
// The part of the library used here (its own typings are loose).

interface BidirectionalStream {
  readonly readable: ReadableStream<Uint8Array>
  readonly writable: WritableStream<Uint8Array>
}

interface Session {
  readonly ready: Promise<unknown>
  readonly closed: Promise<unknown>
  readonly incomingBidirectionalStreams: ReadableStream<BidirectionalStream>
  readonly peerAddress?: string
  readonly header?: Readonly<Record<string, unknown>>
  close(info?: { closeCode?: number; reason?: string }): void
}

interface ClientTransport extends Session {
  createBidirectionalStream(): Promise<BidirectionalStream>
}

interface RequestResult {
  readonly status: number
  readonly path: string
  readonly userData?: unknown
}

interface Server {
  readonly ready: Promise<unknown>
  setRequestCallback(callback: (request: { header: Record<string, unknown> }) => Promise<RequestResult>): void
  sessionStream(path: string): ReadableStream<Session>
  startServer(): void
  stopServer(): void
  address(): { port: number; host: string } | null
  // Internals: the node:http2 server behind an HTTP/2 WebTransport server.
  readonly transportInt?: { readonly serverInt?: { on(event: "session", f: (session: H2Session) => void): void } }
}

interface H2Session {
  readonly destroyed: boolean
  destroy(): void
  once(event: "close", f: () => void): void
}

interface Library {
  readonly Http2Server: new(init: object) => Server
  readonly HttpServer: new(init: object) => Server
  readonly WebTransport: new(url: string, options: object) => ClientTransport
}

// ---------------------------------------------------------------------------------------------

export const make = (options: WebTransportOptions): Effect.Effect<SyncTransport["Service"], TransportError> =>
  Effect.gen(function*() {
    const http3 = options.http3 !== false && (yield* http3Available)
    const library = yield* Effect.tryPromise({
      try: () => import("@fails-components/webtransport") as Promise<unknown> as Promise<Library>,
      catch: (cause) =>
        new TransportError({
          reason: "unavailable",
          message: `@fails-components/webtransport did not load: ${String(cause)}`
        })
    })

    const listen: SyncTransport["Service"]["listen"] = (listenOptions: ListenOptions, onConnection) =>
      Effect.gen(function*() {
        const certificate = listenOptions.certificate
        if (certificate === undefined) {
          return yield* new TransportError({
            reason: "invalid-options",
            message: "a WebTransport server needs a certificate and private key"
          })
        }
        const maxFrameBytes = yield* frameLimit(listenOptions.maxFrameBytes)
        const host = listenOptions.host ?? "127.0.0.1"
        const path = listenOptions.path ?? DEFAULT_PATH
        const context = yield* Effect.context<never>()
        const authorize = listenOptions.authorize

        // Runs for every session request; it must always answer, or the request hangs.
        const onRequest = async ({ header }: { header: Record<string, unknown> }): Promise<RequestResult> => {
          const url = new URL(String(header[":path"] ?? "/"), "https://server")
          if (url.pathname !== path) return { status: 404, path: url.pathname }
          if (authorize !== undefined) {
            const allowed = await Effect.runPromiseWith(context)(authorize(requestPeer(url))).catch(() => false)
            if (!allowed) return { status: 403, path }
          }
          return { status: 200, path }
        }

        const { server, sessions } = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: async () => {
              const init = {
                host,
                port: listenOptions.port ?? 0,
                // Required by the constructor, used only by HTTP/3.
                secret: Crypto.randomBytes(16).toString("hex"),
                cert: certificate.certificate,
                privKey: certificate.privateKey,
                initialStreamFlowControlWindow: STREAM_WINDOW_BYTES,
                initialSessionFlowControlWindow: SESSION_WINDOW_BYTES,
                ...(http3 && { reliability: "both" })
              }
              const created = http3 ? new library.HttpServer(init) : new library.Http2Server(init)
              created.setRequestCallback(onRequest)
              const reader = created.sessionStream(path).getReader()
              created.startServer()
              await created.ready
              return { server: created, sessions: reader, h2Sessions: trackH2Sessions(created) }
            },
            catch: (cause) =>
              new TransportError({ reason: "listen-failed", message: `cannot listen on ${host}: ${String(cause)}` })
          }),
          (started) =>
            Effect.sync(() => {
              started.sessions.cancel().catch(() => undefined)
              quietly(() => started.server.stopServer())
              // Connections still open (sessions queued but never served) would keep the port.
              for (const session of started.h2Sessions) quietly(() => session.destroy())
            })
        )
        const port = server.address()?.port
        if (port === undefined) {
          return yield* new TransportError({ reason: "listen-failed", message: "the server reports no address" })
        }

        yield* serveFramed({
          accept: Effect.tryPromise({ try: () => sessions.read(), catch: closedError }).pipe(
            Effect.map((next) => (next.done ? undefined : acceptedSession(next.value)))
          ),
          listen: listenOptions,
          maxFrameBytes,
          authorizeHere: false,
          onConnection
        })
        return { host, port }
      })

    const connect = (connectOptions: ConnectOptions) =>
      Effect.gen(function*() {
        const maxFrameBytes = yield* frameLimit(connectOptions.maxFrameBytes)
        const { host, port } = connectOptions
        const path = connectOptions.path ?? DEFAULT_PATH
        const url = new URL(`https://${Net.isIPv6(host) ? `[${host}]` : host}:${port}`)
        url.pathname = path
        for (const [key, value] of Object.entries(connectOptions.query ?? {})) url.searchParams.set(key, value)
        const pinned = connectOptions.certificateHash
        const open = Effect.gen(function*() {
          const transport = yield* Effect.acquireRelease(
            Effect.try({
              try: () => {
                const created = new library.WebTransport(url.href, {
                  ...(pinned !== undefined && {
                    serverCertificateHashes: [{ algorithm: "sha-256", value: Buffer.from(pinned) }]
                  }),
                  // Without the HTTP/3 addon the client must be told to use HTTP/2 only.
                  ...(!http3 && { forceReliable: true }),
                  initialStreamFlowControlWindow: STREAM_WINDOW_BYTES,
                  initialSessionFlowControlWindow: SESSION_WINDOW_BYTES
                })
                // Observed through `ready` and the stream; unobserved rejections would be reported.
                created.ready.catch(() => undefined)
                created.closed.catch(() => undefined)
                return created
              },
              catch: (cause) =>
                new TransportError({ reason: "invalid-options", message: `cannot open ${url.href}: ${String(cause)}` })
            }),
            (opened) => Effect.sync(() => closeSession(opened))
          )
          const status = watchStatus(transport)
          yield* Effect.tryPromise({ try: () => transport.ready, catch: (cause) => cause }).pipe(
            Effect.catch((cause) =>
              Effect.flatMap(handshakeError({ url, host, port, pin: pinned }, status(), cause), Effect.fail)
            )
          )
          const stream = yield* Effect.tryPromise({
            try: () => transport.createBidirectionalStream(),
            catch: closedError
          })
          const peer: PeerInfo = { address: `${host}:${port}`, path }
          return { channel: streamChannel(stream, () => closeSession(transport)), peer }
        })
        return yield* connectFramed({ open, maxFrameBytes, timeoutMs: connectOptions.timeoutMs })
      })

    return { kind: http3 ? "webtransport-h3" : "webtransport-h2", listen, connect }
  })

// The stand-in package installed here exports nothing; the real addon exports the HTTP/3 server.
// A variable specifier: the addon is optional and has no typings.
const HTTP3_ADDON: string = "@fails-components/webtransport-transport-http3-quiche"
const http3Available = Effect.promise(() =>
  import(HTTP3_ADDON).then(
    (addon: Record<string, unknown>) => typeof addon["Http3WebTransportServer"] === "function",
    () => false
  )
)

const requestPeer = (url: URL): PeerInfo => ({
  path: url.pathname,
  query: Object.fromEntries(url.searchParams)
})

const acceptedSession = (session: Session): Accepted => {
  const url = new URL(String(session.header?.[":path"] ?? "/"), "https://server")
  return {
    peer: {
      ...requestPeer(url),
      ...(session.peerAddress !== undefined && { address: session.peerAddress })
    },
    open: Effect.tryPromise({
      try: async () => {
        await session.ready
        const reader = session.incomingBidirectionalStreams.getReader()
        const next = await reader.read()
        reader.releaseLock()
        if (next.done) throw new Error("the session closed before the client opened its stream")
        return streamChannel(next.value, () => closeSession(session))
      },
      catch: closedError
    }),
    abort: () => closeSession(session)
  }
}

const streamChannel = (stream: BidirectionalStream, abort: () => void): ByteChannel => {
  const reader = stream.readable.getReader()
  const writer = stream.writable.getWriter()
  return {
    read: async () => {
      const next = await reader.read()
      return next.done ? undefined : next.value
    },
    write: (bytes) => writer.write(bytes),
    finish: () => writer.close(),
    abort
  }
}

// A second close() of the same session, on either side, makes node:http2 spin in SendPendingData
// for good (event loop blocked, memory growing until std::bad_alloc), so each is closed once.
const closedSessions = new WeakSet<Session>()

const closeSession = (session: Session) => {
  if (closedSessions.has(session)) return
  closedSessions.add(session)
  quietly(() => session.close({ closeCode: 0, reason: "" }))
}

const trackH2Sessions = (server: Server): ReadonlySet<H2Session> => {
  const open = new Set<H2Session>()
  server.transportInt?.serverInt?.on("session", (session) => {
    open.add(session)
    session.once("close", () => open.delete(session))
  })
  return open
}

// The library reports every failed handshake as "Opening handshake failed.", so the HTTP status is
// taken from its session before it is dropped (a private hook), and a pinned client that got no
// status checks the server's certificate itself, to tell a stale pin from a network failure.
const watchStatus = (transport: ClientTransport): () => number | undefined => {
  let status: number | undefined
  const session = (transport as { sessionint?: { onClose?: (args: { errorcode?: unknown }) => unknown } }).sessionint
  const onClose = session?.onClose
  if (session !== undefined && typeof onClose === "function") {
    session.onClose = (args) => {
      if (typeof args?.errorcode === "number") status = args.errorcode
      return onClose.call(session, args)
    }
  }
  return () => status
}

const handshakeError = (
  options: { readonly url: URL; readonly host: string; readonly port: number; readonly pin: Uint8Array | undefined },
  status: number | undefined,
  cause: unknown
): Effect.Effect<TransportError> => {
  const detail = cause instanceof Error ? cause.message : String(cause)
  if (status !== undefined) {
    return Effect.succeed(
      new TransportError({ reason: "rejected", message: `the server answered ${status} to ${options.url.pathname}` })
    )
  }
  const failed = new TransportError({
    reason: "connect-failed",
    message: `no session with ${options.host}:${options.port}: ${detail}`
  })
  const pin = options.pin
  if (pin === undefined) return Effect.succeed(failed)
  return Effect.promise(() => serverCertificate(options.host, options.port)).pipe(
    Effect.map((certificate) => {
      if (certificate === undefined) return failed
      if (!Buffer.from(pin).equals(Crypto.createHash("sha256").update(certificate.raw).digest())) {
        return new TransportError({
          reason: "untrusted-server",
          message: `the certificate of ${options.host}:${options.port} does not match the pinned hash`
        })
      }
      const validDays = (Date.parse(certificate.valid_to) - Date.parse(certificate.valid_from)) / 86_400_000
      if (validDays > 14 || Date.parse(certificate.valid_to) < Date.now()) {
        return new TransportError({
          reason: "untrusted-server",
          message: `the pinned certificate is expired or valid for over 14 days (${validDays.toFixed(1)}), ` +
            "which WebTransport does not accept"
        })
      }
      return failed
    })
  )
}

const PROBE_TIMEOUT_MS = 1_000

// The server's certificate, or undefined when no TLS connection could be made.
const serverCertificate = (host: string, port: number) =>
  new Promise<Tls.PeerCertificate | undefined>((resolve) => {
    const socket = Tls.connect({
      host,
      port,
      ...(Net.isIP(host) === 0 && { servername: host }),
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false
    })
    const done = (certificate: Tls.PeerCertificate | undefined) => {
      socket.destroy()
      resolve(certificate)
    }
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(undefined))
    socket.once("error", () => done(undefined))
    socket.once("secureConnect", () => {
      const certificate = socket.getPeerCertificate()
      done(certificate.raw === undefined ? undefined : certificate)
    })
  })

const quietly = (f: () => void) => {
  try {
    f()
  } catch {
    // already closed
  }
}
