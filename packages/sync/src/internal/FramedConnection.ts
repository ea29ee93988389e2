/**
 * What every transport shares once it has a byte stream each way: the hello exchange, framing,
 * the size limit, the incoming queue, graceful close, and the server's per-connection fibers.
 * A transport only supplies `ByteChannel`s (and, on the server, a way to accept them).
 */
import { Cause, Deferred, Effect, Exit, Queue, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import type { Connection, ListenOptions, PeerInfo } from "../SyncTransport.ts"
import { TransportError } from "../TransportError.ts"
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from "./Framing.ts"

/** One bidirectional byte stream of a session, as the transport exposes it. */
export interface ByteChannel {
  /**
   * The next chunk, or undefined once the peer has finished sending. `wanted` is how many bytes
   * would complete the frame being read: transports that copy into a buffer of the asked size size
   * it by this, so small frames do not pay for large reads.
   */
  readonly read: (wanted: number) => Promise<Uint8Array | undefined>
  readonly write: (bytes: Uint8Array) => Promise<void>
  /** Ends our direction after everything written so far. */
  readonly finish: () => Promise<void>
  /** Tears the whole session down at once; safe to call more than once. */
  readonly abort: () => void
}

/** A session a server has accepted but not yet handed to its handler. */
export interface Accepted {
  readonly peer: PeerInfo
  /** Waits for the client's stream. */
  readonly open: Effect.Effect<ByteChannel, TransportError>
  readonly abort: () => void
}

// First frame each way; a peer that sends anything else does not speak this framing.
const HELLO = new TextEncoder().encode("omega-sync/1")
const INCOMING_CAPACITY = 64
const CLOSE_GRACE_MS = 1_000
const ACCEPT_RETRY_MS = 10
export const DEFAULT_TIMEOUT_MS = 5_000

const errorMessage = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

export const closedError = (cause: unknown) =>
  new TransportError({ reason: "closed", message: `connection lost: ${errorMessage(cause)}` })

/** Checks a frame size limit from the options. */
export const frameLimit = (maxFrameBytes: number | undefined): Effect.Effect<number, TransportError> => {
  const limit = maxFrameBytes ?? MAX_FRAME_BYTES
  return Number.isSafeInteger(limit) && limit >= HELLO.byteLength && limit <= 0xffff_ffff
    ? Effect.succeed(limit)
    : Effect.fail(new TransportError({ reason: "invalid-options", message: `bad maxFrameBytes ${limit}` }))
}

/**
 * Reads whole frames off a channel, one at a time. A plain promise loop: it runs once per frame
 * on every session, so it stays out of the fiber machinery; failures are TransportErrors.
 */
const frameReader = (channel: ByteChannel, maxFrameBytes: number) => {
  const decoder = new FrameDecoder(maxFrameBytes)
  const ready: Array<Uint8Array> = []
  let readyAt = 0
  const next = async (): Promise<Uint8Array | undefined> => {
    while (readyAt === ready.length) {
      ready.length = 0
      readyAt = 0
      let chunk: Uint8Array | undefined
      try {
        chunk = await channel.read(decoder.missingBytes)
      } catch (cause) {
        throw closedError(cause)
      }
      if (chunk === undefined) {
        if (decoder.bufferedBytes > 0) {
          throw new TransportError({ reason: "protocol", message: "the peer finished in the middle of a frame" })
        }
        return undefined
      }
      const result = decoder.push(chunk)
      if (result._tag === "TooLarge") {
        throw new TransportError({
          reason: "frame-too-large",
          message: `received a ${result.length}-byte frame, the limit is ${maxFrameBytes}`
        })
      }
      for (const frame of result.frames) ready.push(frame)
    }
    return ready[readyAt++]
  }
  return {
    next,
    nextEffect: Effect.tryPromise({
      try: next,
      catch: (cause) => (cause instanceof TransportError ? cause : closedError(cause))
    })
  }
}

type FrameReader = ReturnType<typeof frameReader>

const expectHello = (reader: FrameReader) =>
  Effect.flatMap(reader.nextEffect, (frame) =>
    frame !== undefined && Buffer.from(frame).equals(HELLO)
      ? Effect.void
      : Effect.fail(
        new TransportError({
          reason: frame === undefined ? "rejected" : "protocol",
          message: frame === undefined ? "the server closed the session" : "the peer does not speak omega-sync/1"
        })
      ))

const sendHello = (channel: ByteChannel) =>
  Effect.tryPromise({ try: () => channel.write(encodeFrame(HELLO)), catch: closedError })

/**
 * The client side of a connection: `open` sets the session up (registering its teardown in the
 * scope it runs in), then the hellos are exchanged. Everything is torn down again on failure.
 */
export const connectFramed = (options: {
  readonly open: Effect.Effect<{ readonly channel: ByteChannel; readonly peer: PeerInfo }, TransportError, Scope.Scope>
  readonly maxFrameBytes: number
  readonly timeoutMs: number | undefined
}): Effect.Effect<Connection, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope)
    const setUp = Effect.gen(function*() {
      const { channel, peer } = yield* options.open
      const reader = frameReader(channel, options.maxFrameBytes)
      yield* sendHello(channel)
      yield* expectHello(reader)
      return yield* makeConnection(channel, reader, peer, options.maxFrameBytes)
    }).pipe(
      Effect.mapError((error) =>
        // A session that dies before the server's hello was dropped on purpose by the server.
        error.reason === "closed"
          ? new TransportError({ reason: "rejected", message: `the server dropped the session (${error.message})` })
          : error
      )
    )
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    return yield* setUp.pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () =>
          Effect.fail(new TransportError({ reason: "timeout", message: `no session within ${timeoutMs} ms` }))
      }),
      Scope.provide(scope),
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
  })

/**
 * Runs the server side: takes sessions from `accept` until it returns undefined (or the scope
 * closes) and gives each one its own fiber, which checks `authorize`, exchanges hellos and runs
 * `onConnection`. Failures of one connection are logged and end only that connection.
 */
export const serveFramed = <E, R>(options: {
  readonly accept: Effect.Effect<Accepted | undefined, TransportError>
  readonly listen: ListenOptions
  readonly maxFrameBytes: number
  /** False where the transport already asked `authorize` before the session existed. */
  readonly authorizeHere: boolean
  /**
   * Accept loops running at once (default 1). Where `accept` returns only once a session's
   * handshake is done, one loop admits one session per handshake round trip: a shard restarted
   * under thousands of TVs would take minutes to let them all back in.
   */
  readonly acceptors?: number
  readonly onConnection: (connection: Connection) => Effect.Effect<void, E, R>
}): Effect.Effect<void, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    // Parallel, so that stopping a busy server does not close its connections one after another.
    const connections = yield* Scope.fork(yield* Effect.scope, "parallel")
    const serveOne = (accepted: Accepted) =>
      Effect.gen(function*() {
        yield* Effect.addFinalizer(() => Effect.sync(accepted.abort))
        const authorize = options.listen.authorize
        if (options.authorizeHere && authorize !== undefined && !(yield* authorize(accepted.peer))) return
        // A client that opens nothing, or stalls inside its hello, is dropped after the timeout.
        const { channel, reader } = yield* Effect.gen(function*() {
          const opened = yield* accepted.open
          const frames = frameReader(opened, options.maxFrameBytes)
          yield* expectHello(frames)
          return { channel: opened, reader: frames }
        }).pipe(
          Effect.timeoutOrElse({
            duration: DEFAULT_TIMEOUT_MS,
            orElse: () => Effect.fail(new TransportError({ reason: "timeout", message: "the client sent no hello" }))
          })
        )
        yield* sendHello(channel)
        const connection = yield* makeConnection(channel, reader, accepted.peer, options.maxFrameBytes)
        yield* options.onConnection(connection)
      }).pipe(
        Effect.scoped,
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.void
            : Effect.logDebug("sync connection ended with a failure", cause)
        ),
        Effect.forkIn(connections)
      )
    // A failed accept is one client's failed handshake (or a probe), not the listener's end: it
    // is logged and the loop goes on, after a pause so that a broken endpoint cannot spin it.
    const acceptOne = options.accept.pipe(
      Effect.catch((error) =>
        Effect.logDebug("sync listener: a connection failed before it was accepted", error).pipe(
          Effect.andThen(Effect.sleep(ACCEPT_RETRY_MS)),
          Effect.as(null)
        )
      )
    )
    const loop = Effect.gen(function*() {
      for (;;) {
        const accepted = yield* acceptOne
        if (accepted === undefined) return
        if (accepted !== null) yield* serveOne(accepted)
      }
    }).pipe(
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logWarning("sync listener stopped accepting", cause)
      )
    )
    // Several acceptors where accepting waits for a handshake (QUIC), so handshakes overlap.
    for (let i = 0; i < (options.acceptors ?? 1); i++) yield* Effect.forkScoped(loop)
  })

/** Resolves when `promise` settles (either way) or after `ms`, whichever is first. */
const settledWithin = (promise: Promise<unknown>, ms: number) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    const done = () => {
      clearTimeout(timer)
      resolve()
    }
    promise.then(done, done)
  })

/**
 * A connection over `channel` whose hellos are done; closed with the current scope. The per-frame
 * paths (the read pump and `send`) are plain promises: a fiber, a semaphore permit and a queue
 * effect per frame cost more than the QUIC binding itself (see `throughput.ts`).
 */
const makeConnection = (
  channel: ByteChannel,
  reader: FrameReader,
  peer: PeerInfo,
  maxFrameBytes: number
): Effect.Effect<Connection, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Queue.bounded<Uint8Array, TransportError | Cause.Done>(INCOMING_CAPACITY)
    const closing = yield* Deferred.make<void>()
    const closed = yield* Deferred.make<void>()
    let sendable = true
    let closeStarted = false
    // Writes go out one after another: each starts when the previous one has been taken.
    let lastWrite: Promise<unknown> = Promise.resolve()

    // Broken transport or protocol violation: nothing more can be trusted, drop the session.
    const breakWith = (error: TransportError) => {
      sendable = false
      channel.abort()
      Queue.failCauseUnsafe(queue, Cause.fail(error))
    }

    // Full: wait for the reader, unless a local close makes the frame moot.
    const waitForRoom = (frame: Uint8Array) =>
      Effect.runPromise(Effect.raceFirst(Queue.offer(queue, frame), Deferred.await(closing)))

    const pump = async () => {
      for (;;) {
        const frame = await reader.next()
        if (frame === undefined) break
        if (!closeStarted && !Queue.offerUnsafe(queue, frame)) await waitForRoom(frame)
      }
      Queue.endUnsafe(queue)
    }
    const readerDone = pump().catch((error: unknown) => {
      if (!closeStarted) breakWith(error instanceof TransportError ? error : closedError(error))
    })

    // Uninterruptible from the flag on: a close interrupted between setting it and finishing
    // would leave every later close (the scope's finalizer among them) waiting for good.
    const close = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        if (closeStarted) return restore(Deferred.await(closed))
        closeStarted = true
        sendable = false
        return Effect.gen(function*() {
          yield* Deferred.succeed(closing, undefined)
          yield* Queue.end(queue)
          // FIN goes behind the queued writes. A peer that stops reading can hold a write up for
          // good (flow control), so this waits at most the grace period, then aborts.
          yield* Effect.promise(() => settledWithin(lastWrite.then(() => channel.finish()), CLOSE_GRACE_MS))
          // The peer answers with its own FIN once it has read everything; then nothing is lost.
          yield* Effect.promise(() => settledWithin(readerDone, CLOSE_GRACE_MS))
          channel.abort()
          yield* Deferred.succeed(closed, undefined)
        })
      })
    )
    yield* Effect.addFinalizer(() => close)

    const send = (frame: Uint8Array): Effect.Effect<void, TransportError> =>
      Effect.suspend(() => {
        if (frame.byteLength > maxFrameBytes) {
          return Effect.fail(
            new TransportError({
              reason: "frame-too-large",
              message: `cannot send a ${frame.byteLength}-byte frame, the limit is ${maxFrameBytes}`
            })
          )
        }
        if (!sendable) return Effect.fail(new TransportError({ reason: "closed", message: "the connection is closed" }))
        const bytes = encodeFrame(frame)
        // Once queued, a frame goes out even if its sender is interrupted; a failed write breaks
        // the connection whether or not anyone still waits for it.
        const write = lastWrite.then(() => channel.write(bytes)).catch((cause: unknown) => {
          const error = closedError(cause)
          breakWith(error)
          throw error
        })
        lastWrite = write.catch(() => undefined)
        return Effect.tryPromise({
          try: () => write,
          catch: (cause) => (cause instanceof TransportError ? cause : closedError(cause))
        })
      })

    return {
      id: randomUUID(),
      peer,
      send,
      // One frame per pull, so that reading a few frames and stopping never drops the rest.
      incoming: Stream.fromEffectRepeat(Queue.take(queue)),
      close
    } satisfies Connection
  })
