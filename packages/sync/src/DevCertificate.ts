/**
 * Short-lived self-signed certificates for WebTransport in development and tests. WebTransport
 * clients accept a self-signed server when they pin the SHA-256 of its certificate, and only for
 * an ECDSA certificate valid for at most 14 days, so this makes exactly that: ECDSA P-256, signed
 * with SHA-256, for the given DNS names and IP addresses. Built with node:crypto alone (the DER is
 * written here), so it needs neither openssl nor a certificate library.
 */
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Net from "node:net"
import { TransportError } from "./TransportError.ts"

export interface DevCertificateOptions {
  /** DNS names and IP addresses the certificate is for (default localhost, 127.0.0.1, ::1). */
  readonly hosts?: ReadonlyArray<string>
  /** Validity in days, at most 14 (default 10). */
  readonly days?: number
}

export interface DevCertificate {
  /** PEM certificate, for the server. */
  readonly certificate: string
  /** PEM PKCS#8 private key, for the server. Secret. */
  readonly privateKey: string
  /** SHA-256 of the DER certificate: the pin a client passes as `certificateHash`. */
  readonly sha256: Uint8Array
  readonly sha256Hex: string
  readonly sha256Base64: string
  readonly notBefore: Date
  readonly notAfter: Date
}

/** Longest validity a WebTransport client accepts for a pinned certificate. */
export const MAX_PINNED_CERTIFICATE_DAYS = 14

const DAY_MS = 86_400_000

/** A new ECDSA P-256 self-signed certificate and key, with its SHA-256 pin. */
export const makeDevCertificate = (
  options: DevCertificateOptions = {}
): Effect.Effect<DevCertificate, TransportError> =>
  Effect.suspend(() => {
    const days = options.days ?? 10
    const hosts = options.hosts ?? ["localhost", "127.0.0.1", "::1"]
    if (!(days > 0 && days <= MAX_PINNED_CERTIFICATE_DAYS)) {
      return Effect.fail(
        new TransportError({
          reason: "invalid-options",
          message: `validity must be in (0, ${MAX_PINNED_CERTIFICATE_DAYS}] days, got ${days}`
        })
      )
    }
    const bad = hosts.find((host) =>
      host.length === 0 || host.length > 253 || (Net.isIP(host) === 6 && host.includes("."))
    )
    if (hosts.length === 0 || bad !== undefined) {
      return Effect.fail(
        new TransportError({
          reason: "invalid-options",
          message: bad === undefined ? "need at least one host" : `unsupported host "${bad}"`
        })
      )
    }
    return Effect.sync(() => build(hosts, days))
  })

/** SHA-256 of a PEM certificate's DER bytes, the value WebTransport pins. */
export const certificateSha256 = (certificatePem: string): Uint8Array =>
  new Uint8Array(Crypto.createHash("sha256").update(new Crypto.X509Certificate(certificatePem).raw).digest())

const build = (hosts: ReadonlyArray<string>, days: number): DevCertificate => {
  const { privateKey, publicKey } = Crypto.generateKeyPairSync("ec", { namedCurve: "P-256" })
  // Backdated a minute so that a client whose clock is slightly behind still accepts it.
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000)
  const notAfter = new Date(notBefore.getTime() + days * DAY_MS)
  const name = seq(set(seq(oid("2.5.4.3"), utf8(hosts[0]!))))
  const serial = Crypto.randomBytes(16)
  serial[0]! &= 0x7f // positive
  const extensions = [
    extension("2.5.29.17", false, seq(...hosts.map(generalName))),
    extension("2.5.29.19", true, seq()), // basicConstraints: not a CA
    extension("2.5.29.15", true, bitString(Uint8Array.of(0x80), 7)), // keyUsage: digitalSignature
    extension("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"))) // extKeyUsage: serverAuth
  ]
  const signatureAlgorithm = seq(oid("1.2.840.10045.4.3.2")) // ecdsa-with-SHA256
  const tbs = seq(
    explicit(0, integer(Uint8Array.of(2))), // v3
    integer(serial),
    signatureAlgorithm,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    new Uint8Array(publicKey.export({ type: "spki", format: "der" })),
    explicit(3, seq(...extensions))
  )
  const signature = Crypto.sign("sha256", tbs, privateKey) // DER-encoded ECDSA signature
  const der = seq(tbs, signatureAlgorithm, bitString(signature, 0))
  const sha256 = new Uint8Array(Crypto.createHash("sha256").update(der).digest())
  const body = Buffer.from(der).toString("base64").replace(/.{1,64}/g, "$&\n")
  return {
    certificate: `-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`,
    privateKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    sha256,
    sha256Hex: Buffer.from(sha256).toString("hex"),
    sha256Base64: Buffer.from(sha256).toString("base64"),
    notBefore,
    notAfter
  }
}

// ---------------------------------------------------------------------------------------------
// Just enough DER for one certificate.

const tlv = (tag: number, content: Uint8Array): Uint8Array => {
  const length = content.byteLength
  const lengthBytes = length < 0x80
    ? Uint8Array.of(length)
    : length < 0x100
    ? Uint8Array.of(0x81, length)
    : Uint8Array.of(0x82, length >> 8, length & 0xff)
  const out = new Uint8Array(1 + lengthBytes.byteLength + length)
  out[0] = tag
  out.set(lengthBytes, 1)
  out.set(content, 1 + lengthBytes.byteLength)
  return out
}

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.byteLength, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.byteLength
  }
  return out
}

const seq = (...parts: ReadonlyArray<Uint8Array>) => tlv(0x30, concat(parts))
const set = (...parts: ReadonlyArray<Uint8Array>) => tlv(0x31, concat(parts))
const explicit = (tag: number, content: Uint8Array) => tlv(0xa0 | tag, content)
/**
 * A non-negative INTEGER from its big-endian bytes, in DER's minimal form: no leading zero byte
 * unless the next byte's high bit needs it (a random serial starting 0x00 0x3f was "illegal
 * padding" to OpenSSL, about one certificate in 512).
 */
const integer = (bytes: Uint8Array) => {
  let start = 0
  while (start < bytes.length - 1 && bytes[start] === 0) start++
  const magnitude = bytes.subarray(start)
  return tlv(0x02, magnitude[0]! & 0x80 ? concat([Uint8Array.of(0), magnitude]) : magnitude)
}
const utf8 = (text: string) => tlv(0x0c, new TextEncoder().encode(text))
const bitString = (bytes: Uint8Array, unusedBits: number) => tlv(0x03, concat([Uint8Array.of(unusedBits), bytes]))
const octetString = (bytes: Uint8Array) => tlv(0x04, bytes)
const booleanTrue = tlv(0x01, Uint8Array.of(0xff))

const oid = (dotted: string): Uint8Array => {
  const [first, second, ...rest] = dotted.split(".").map(Number)
  const bytes = [first! * 40 + second!]
  for (const arc of rest) {
    const base128 = [arc & 0x7f]
    for (let value = arc >> 7; value > 0; value >>= 7) base128.unshift((value & 0x7f) | 0x80)
    bytes.push(...base128)
  }
  return tlv(0x06, Uint8Array.from(bytes))
}

// UTCTime up to 2049, as RFC 5280 requires; GeneralizedTime after.
const time = (date: Date): Uint8Array => {
  const iso = date.toISOString() // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-:T]/g, "") + "Z"
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, new TextEncoder().encode(digits.slice(2)))
    : tlv(0x18, new TextEncoder().encode(digits))
}

const extension = (id: string, critical: boolean, value: Uint8Array) =>
  critical ? seq(oid(id), booleanTrue, octetString(value)) : seq(oid(id), octetString(value))

// SubjectAltName entries: iPAddress [7] for addresses, dNSName [2] otherwise.
const generalName = (host: string): Uint8Array => {
  const family = Net.isIP(host)
  if (family === 4) return tlv(0x87, Uint8Array.from(host.split(".").map(Number)))
  if (family === 6) return tlv(0x87, ipv6Bytes(host))
  return tlv(0x82, new TextEncoder().encode(host))
}

const hexGroups = (part: string) => (part === "" ? [] : part.split(":").map((group) => parseInt(group, 16)))

const ipv6Bytes = (address: string): Uint8Array => {
  const [head = "", tail] = address.split("::")
  const left = hexGroups(head)
  const right = tail === undefined ? [] : hexGroups(tail)
  const all = [...left, ...Array.from({ length: 8 - left.length - right.length }, () => 0), ...right]
  const out = new Uint8Array(16)
  all.forEach((group, i) => {
    out[2 * i] = group >> 8
    out[2 * i + 1] = group & 0xff
  })
  return out
}
