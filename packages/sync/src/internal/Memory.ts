/**
 * The in-process transport: servers register under a port in this layer's own table and clients
 * get a pair of byte pipes to them. Everything above the bytes is the same code the network
 * transports run (hellos, framing, limits, close), and the pins and device keys are checked the
 * same way, so "mock hardware" tests exercise the real connection logic.
 */
import { Cause, Effect, Queue } from "effect"
import { certificateSha256 } from "../DevCertificate.ts"
import type { ConnectOptions, ListenOptions, SyncTransport } from "../SyncTransport.ts"
import { TransportError } from "../TransportError.ts"
import type { Accepted, ByteChannel } from "./FramedConnection.ts"
import { connectFramed, frameLimit, serveFramed } from "./FramedConnection.ts"

interface MemoryServer {
  readonly path: string
  readonly certificateHash: Uint8Array | undefined
  readonly peerId: string | undefined
  readonly offer: (accepted: Accepted) => void
}

const FIRST_PORT = 40_000
const DEFAULT_PATH = "/sync"

export const make: Effect.Effect<SyncTransport["Service"]> = Effect.sync(() => {
  const servers = new Map<number, MemoryServer>()
  let nextPort = FIRST_PORT
  let nextClient = 1

  const listen: SyncTransport["Service"]["listen"] = (options: ListenOptions, onConnection) =>
    Effect.gen(function*() {
      const maxFrameBytes = yield* frameLimit(options.maxFrameBytes)
      const host = options.host ?? "127.0.0.1"
      let port = options.port ?? 0
      if (port === 0) {
        while (servers.has(nextPort)) nextPort++
        port = nextPort++
      }
      if (servers.has(port)) {
        return yield* new TransportError({ reason: "listen-failed", message: `port ${port} is in use` })
      }
      const queue = yield* Queue.unbounded<Accepted, Cause.Done>()
      const server: MemoryServer = {
        path: options.path ?? DEFAULT_PATH,
        certificateHash: options.certificate && certificateSha256(options.certificate.certificate),
        peerId: options.identity?.peerId,
        offer: (accepted) => {
          if (!Queue.offerUnsafe(queue, accepted)) accepted.abort()
        }
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => servers.set(port, server)),
        () =>
          Effect.sync(() => {
            servers.delete(port)
            Queue.endUnsafe(queue)
          })
      )
      yield* serveFramed({
        accept: Queue.take(queue).pipe(
          Effect.catchIf(Cause.isDone, () => Effect.succeed(undefined))
        ),
        listen: options,
        maxFrameBytes,
        authorizeHere: true,
        onConnection
      })
      return { host, port }
    })

  const connect = (options: ConnectOptions) =>
    Effect.gen(function*() {
      const maxFrameBytes = yield* frameLimit(options.maxFrameBytes)
      const open = Effect.gen(function*() {
        const server = servers.get(options.port)
        if (server === undefined) {
          return yield* new TransportError({
            reason: "connect-failed",
            message: `nothing listens on memory port ${options.port}`
          })
        }
        const path = options.path ?? DEFAULT_PATH
        if (path !== server.path) {
          return yield* new TransportError({ reason: "rejected", message: `the server answered 404 to ${path}` })
        }
        if (
          options.certificateHash !== undefined &&
          (server.certificateHash === undefined ||
            !Buffer.from(server.certificateHash).equals(Buffer.from(options.certificateHash)))
        ) {
          return yield* new TransportError({
            reason: "untrusted-server",
            message: "the server certificate does not match the pinned hash"
          })
        }
        if (options.serverPeerId !== undefined && options.serverPeerId !== server.peerId) {
          return yield* new TransportError({
            reason: "untrusted-server",
            message: `the server is ${server.peerId ?? "anonymous"}, not ${options.serverPeerId}`
          })
        }
        const [client, serverEnd] = pipePair()
        yield* Effect.addFinalizer(() => Effect.sync(client.abort))
        server.offer({
          peer: {
            address: `memory:${nextClient++}`,
            ...(options.identity && { deviceKey: options.identity.peerId }),
            path,
            query: options.query ?? {}
          },
          open: Effect.succeed(serverEnd),
          abort: serverEnd.abort
        })
        const peer = {
          address: `${options.host}:${options.port}`,
          ...(server.peerId !== undefined && { deviceKey: server.peerId })
        }
        return { channel: client, peer }
      })
      return yield* connectFramed({ open, maxFrameBytes, timeoutMs: options.timeoutMs })
    })

  return { kind: "memory", listen, connect }
})

// ---------------------------------------------------------------------------------------------
// Byte pipes

// A writer waits once this much is unread, as a socket's buffers would make it.
const PIPE_HIGH_WATER_BYTES = 1 << 20

interface Waiter<A> {
  readonly resolve: (value: A) => void
  readonly reject: (error: Error) => void
}

class Pipe {
  private chunks: Array<Uint8Array> = []
  private bytes = 0
  private finished = false
  private error: Error | undefined = undefined
  private reader: Waiter<Uint8Array | undefined> | undefined = undefined
  private writers: Array<Waiter<void>> = []

  write(bytes: Uint8Array): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error)
    if (this.finished) return Promise.reject(new Error("write after finish"))
    const copy = bytes.slice()
    const reader = this.reader
    if (reader !== undefined) {
      this.reader = undefined
      reader.resolve(copy)
      return Promise.resolve()
    }
    this.chunks.push(copy)
    this.bytes += copy.byteLength
    return this.bytes <= PIPE_HIGH_WATER_BYTES
      ? Promise.resolve()
      : new Promise((resolve, reject) => this.writers.push({ resolve, reject }))
  }

  read(): Promise<Uint8Array | undefined> {
    if (this.error !== undefined) return Promise.reject(this.error)
    const chunk = this.chunks.shift()
    if (chunk !== undefined) {
      this.bytes -= chunk.byteLength
      if (this.bytes <= PIPE_HIGH_WATER_BYTES) {
        for (const writer of this.writers.splice(0)) writer.resolve()
      }
      return Promise.resolve(chunk)
    }
    if (this.finished) return Promise.resolve(undefined)
    return new Promise((resolve, reject) => {
      this.reader = { resolve, reject }
    })
  }

  finish(): Promise<void> {
    this.finished = true
    if (this.chunks.length === 0) {
      this.reader?.resolve(undefined)
      this.reader = undefined
    }
    return Promise.resolve()
  }

  fail(error: Error): void {
    if (this.error !== undefined) return
    this.error = error
    this.chunks = []
    this.reader?.reject(error)
    this.reader = undefined
    for (const writer of this.writers.splice(0)) writer.reject(error)
  }
}

const pipePair = (): readonly [ByteChannel, ByteChannel] => {
  const toServer = new Pipe()
  const toClient = new Pipe()
  const abort = () => {
    const error = new Error("session aborted")
    toServer.fail(error)
    toClient.fail(error)
  }
  const end = (inbound: Pipe, outbound: Pipe): ByteChannel => ({
    read: () => inbound.read(),
    write: (bytes) => outbound.write(bytes),
    finish: () => outbound.finish(),
    abort
  })
  return [end(toClient, toServer), end(toServer, toClient)]
}
