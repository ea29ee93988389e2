import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import { certificateSha256, makeDevCertificate } from "./DevCertificate.ts"

describe("makeDevCertificate", () => {
  it.effect("makes a self-signed ECDSA P-256 server certificate for the hosts, valid for the given days", () =>
    Effect.gen(function*() {
      const made = yield* makeDevCertificate({ hosts: ["localhost", "127.0.0.1", "::1"], days: 3 })
      const certificate = new Crypto.X509Certificate(made.certificate)
      assert.isTrue(certificate.verify(certificate.publicKey), "self-signed")
      assert.strictEqual(certificate.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1")
      assert.strictEqual(certificate.checkHost("localhost"), "localhost")
      assert.strictEqual(certificate.checkIP("127.0.0.1"), "127.0.0.1")
      assert.strictEqual(certificate.checkIP("::1"), "::1")
      assert.isFalse(certificate.ca)
      assert.deepStrictEqual(certificate.keyUsage, ["1.3.6.1.5.5.7.3.1"])
      const days = (Date.parse(certificate.validTo) - Date.parse(certificate.validFrom)) / 86_400_000
      assert.strictEqual(days, 3)
      assert.isTrue(Date.parse(certificate.validFrom) <= Date.now())
      // The key belongs to the certificate, and the pin is the SHA-256 of its DER bytes.
      const publicKey = Crypto.createPublicKey(Crypto.createPrivateKey(made.privateKey))
      assert.isTrue(publicKey.equals(certificate.publicKey))
      assert.strictEqual(made.sha256Hex, certificate.fingerprint256.replaceAll(":", "").toLowerCase())
      assert.deepStrictEqual(certificateSha256(made.certificate), made.sha256)
      assert.strictEqual(Buffer.from(made.sha256Base64, "base64").toString("hex"), made.sha256Hex)
    }))

  it.effect(
    "every certificate parses, whatever its random serial (DER integers in minimal form)",
    () =>
      Effect.gen(function*() {
        // A serial starting with a zero byte broke about one certificate in 512.
        for (let i = 0; i < 3_000; i++) {
          const made = yield* makeDevCertificate({ hosts: ["localhost"], days: 1 })
          assert.strictEqual(certificateSha256(made.certificate).length, 32)
        }
      }),
    60_000
  )

  it.effect("refuses validity WebTransport would not accept, and odd hosts", () =>
    Effect.gen(function*() {
      for (const days of [0, 15, Number.NaN]) {
        const error = yield* Effect.flip(makeDevCertificate({ days }))
        assert.strictEqual(error.reason, "invalid-options")
      }
      for (const hosts of [[], [""], ["::ffff:127.0.0.1"]]) {
        const error = yield* Effect.flip(makeDevCertificate({ hosts }))
        assert.strictEqual(error.reason, "invalid-options")
      }
    }))
})
