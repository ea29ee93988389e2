/**
 * Ed25519 identities for the QUIC transport. The QUIC TLS handshake (libp2p's) proves that each
 * side holds the private key behind its peer id, so a device's peer id is its authenticated
 * identity and a TV pins the shard by peer id instead of a certificate. Keys use libp2p's protobuf
 * encoding, which the native binding expects; peer ids are its base58 "12D3KooW..." strings.
 */
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import { TransportError } from "./TransportError.ts"

/** A private key with the peer id derived from it. Persist `privateKey` to keep the identity. */
export interface QuicIdentity {
  /** libp2p protobuf encoding of the Ed25519 private key (68 bytes). Secret. */
  readonly privateKey: Uint8Array
  readonly peerId: string
}

/** Whether `text` reads as an Ed25519 peer id: every one is 52 base58 characters starting "12D3KooW". */
export const isQuicPeerId = (text: string): boolean => /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/.test(text)

/** A new random identity. */
export const makeQuicIdentity = (): QuicIdentity => {
  const key = Crypto.generateKeyPairSync("ed25519")
  const jwk = key.privateKey.export({ format: "jwk" })
  const seed = Buffer.from(jwk.d!, "base64url")
  const publicKey = Buffer.from(jwk.x!, "base64url")
  return { privateKey: privateKeyProto(seed, publicKey), peerId: peerIdOf(publicKey) }
}

/** The identity stored as `privateKey` bytes; fails when they are not an Ed25519 libp2p key. */
export const quicIdentityFromPrivateKey = (privateKey: Uint8Array): Effect.Effect<QuicIdentity, TransportError> =>
  Effect.suspend(() => {
    const seed = parsePrivateKeyProto(privateKey)
    if (seed === undefined) {
      return Effect.fail(
        new TransportError({
          reason: "invalid-options",
          message: `not a libp2p Ed25519 private key (${privateKey.byteLength} bytes)`
        })
      )
    }
    const publicKey = publicKeyOfSeed(seed)
    // libp2p appends the public key to the seed; a mismatch means the bytes were tampered with.
    if (privateKey.byteLength === PROTO_PREFIX.length + 64) {
      const stored = privateKey.subarray(PROTO_PREFIX.length + 32)
      if (!Buffer.from(stored).equals(publicKey)) {
        return Effect.fail(
          new TransportError({ reason: "invalid-options", message: "the key's public half does not match its seed" })
        )
      }
    }
    return Effect.succeed({ privateKey: privateKeyProto(seed, publicKey), peerId: peerIdOf(publicKey) })
  })

// protobuf { 1: KeyType = Ed25519 (1), 2: bytes }, as libp2p encodes keys.
const PROTO_PREFIX = Uint8Array.of(0x08, 0x01, 0x12, 0x40)
const PUBLIC_PROTO_PREFIX = Uint8Array.of(0x08, 0x01, 0x12, 0x20)
// PKCS#8 wrapping of a raw 32-byte Ed25519 seed, so node:crypto can import it.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")

const privateKeyProto = (seed: Uint8Array, publicKey: Uint8Array): Uint8Array => {
  const out = new Uint8Array(PROTO_PREFIX.length + 64)
  out.set(PROTO_PREFIX)
  out.set(seed, PROTO_PREFIX.length)
  out.set(publicKey, PROTO_PREFIX.length + 32)
  return out
}

// The 32-byte seed, accepting libp2p's 64-byte (seed + public key) and bare 32-byte forms.
const parsePrivateKeyProto = (bytes: Uint8Array): Uint8Array | undefined => {
  const prefixLength = PROTO_PREFIX.length - 1
  for (let i = 0; i < prefixLength; i++) if (bytes[i] !== PROTO_PREFIX[i]) return undefined
  const length = bytes[prefixLength]
  if ((length !== 64 && length !== 32) || bytes.byteLength !== prefixLength + 1 + length) return undefined
  return bytes.slice(PROTO_PREFIX.length, PROTO_PREFIX.length + 32)
}

const publicKeyOfSeed = (seed: Uint8Array): Buffer => {
  const privateKey = Crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: "der",
    type: "pkcs8"
  })
  const jwk = Crypto.createPublicKey(privateKey).export({ format: "jwk" })
  return Buffer.from(jwk.x!, "base64url")
}

// An Ed25519 peer id is the identity multihash (code 0x00, length 36) of the public key protobuf.
const peerIdOf = (publicKey: Uint8Array): string => {
  const multihash = new Uint8Array(2 + PUBLIC_PROTO_PREFIX.length + 32)
  multihash.set([0x00, PUBLIC_PROTO_PREFIX.length + 32])
  multihash.set(PUBLIC_PROTO_PREFIX, 2)
  multihash.set(publicKey, 2 + PUBLIC_PROTO_PREFIX.length)
  return base58btc(multihash)
}

const BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

const base58btc = (bytes: Uint8Array): string => {
  let value = 0n
  for (const byte of bytes) value = (value << 8n) | BigInt(byte)
  let out = ""
  while (value > 0n) {
    out = BASE58[Number(value % 58n)] + out
    value /= 58n
  }
  for (const byte of bytes) {
    if (byte !== 0) break
    out = "1" + out
  }
  return out
}
