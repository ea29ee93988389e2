/**
 * The quinn binding inside @chainsafe/libp2p-quic, used without libp2p. Its `napi.js` is not in
 * the package's exports, so it is loaded by path; it then picks the prebuilt binary for this
 * platform (an optional dependency installed by npm). The binding ships no real typings, so the
 * part used here is declared below.
 */
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { pathToFileURL } from "node:url"

export interface QuinnConfigInit {
  /** libp2p protobuf private key: the TLS identity. */
  readonly privateKeyProto: Uint8Array
  // Every field is required by the native side ("Missing field ...").
  readonly handshakeTimeout: number
  readonly maxIdleTimeout: number
  readonly keepAliveInterval: number
  readonly maxConcurrentStreamLimit: number
  readonly maxStreamData: number
  readonly maxConnectionData: number
  readonly receiveBufferSize: number
  readonly sendBufferSize: number
}

export interface NativeStream {
  /** Undefined or null once the peer has finished. */
  read(maxLength: number): Promise<Uint8Array | null | undefined>
  write(data: Uint8Array): Promise<void>
  finishWrite(): Promise<void>
}

export interface NativeConnection {
  /** For example /ip4/127.0.0.1/udp/5555/quic-v1/p2p/12D3KooW..., with the peer's authenticated id. */
  remoteMultiaddr(): string
  inboundStream(): Promise<NativeStream>
  outboundStream(): Promise<NativeStream>
  closed(): Promise<void>
  /** Sends CONNECTION_CLOSE at once; there is no graceful close with a code. */
  abort(): void
}

export interface NativeServer {
  port(): number
  inboundConnection(): Promise<NativeConnection>
  abort(): Promise<void>
}

export interface NativeClient {
  outboundConnection(ip: string, port: number): Promise<NativeConnection>
  abort(): void
}

export interface QuicNative {
  readonly QuinnConfig: new(init: QuinnConfigInit) => object
  readonly Server: new(config: object, ip: string, port: number) => NativeServer
  /** family 0 = IPv4, 1 = IPv6 */
  readonly Client: new(config: object, family: 0 | 1) => NativeClient
}

const PACKAGE = "@chainsafe/libp2p-quic"

/** Loads the binding; rejects when the package or its binary for this platform is missing. */
export const loadQuicNative = async (): Promise<QuicNative> => {
  const require = createRequire(import.meta.url)
  const directories = require.resolve.paths(PACKAGE) ?? []
  const file = directories
    .map((directory) => Path.join(directory, PACKAGE, "dist", "src", "napi.js"))
    .find((candidate) => Fs.existsSync(candidate))
  if (file === undefined) throw new Error(`${PACKAGE} is not installed`)
  return (await import(pathToFileURL(file).href)) as QuicNative
}

/** The peer id at the end of a remote multiaddr. */
export const peerIdOfMultiaddr = (multiaddr: string): string | undefined => {
  const at = multiaddr.lastIndexOf("/p2p/")
  return at < 0 ? undefined : multiaddr.slice(at + "/p2p/".length)
}

/** "host:port" from /ip4/1.2.3.4/udp/5555/... or /ip6/::1/udp/5555/... */
export const addressOfMultiaddr = (multiaddr: string): string | undefined => {
  const parts = multiaddr.split("/")
  const host = parts[2]
  const port = parts[4]
  if (host === undefined || port === undefined) return undefined
  return parts[1] === "ip6" ? `[${host}]:${port}` : `${host}:${port}`
}
