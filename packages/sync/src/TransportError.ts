/** The one error of the sync transports; `reason` says what a caller can do about it. */
import { Schema } from "effect"

export const TransportErrorReason = Schema.Literals([
  /** This transport cannot run here (its native binding did not load). */
  "unavailable",
  /** The options are missing something this transport needs, or hold a bad value. */
  "invalid-options",
  /** The server could not bind its address. */
  "listen-failed",
  /** No session could be set up (nothing listening, network down, handshake failed). */
  "connect-failed",
  /** The server did not prove the pinned identity (certificate hash or QUIC peer id). */
  "untrusted-server",
  /** The server refused this client (for example an unknown device). */
  "rejected",
  /** The handshake did not finish in time. */
  "timeout",
  /** A frame over the size limit, sent or received; a received one also closes the connection. */
  "frame-too-large",
  /** The peer does not speak this framing, or cut a frame short. */
  "protocol",
  /** The connection is closed or broke. */
  "closed"
])
export type TransportErrorReason = typeof TransportErrorReason.Type

export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  reason: TransportErrorReason,
  message: Schema.String
}) {}
