/**
 * Writes a short-lived self-signed ECDSA P-256 certificate for a local WebTransport server and
 * prints the SHA-256 pin clients pass as `certificateHash`.
 *
 *   node certs/make-dev-cert.ts [out-dir] [--days=10] [--host=localhost --host=127.0.0.1 ...]
 *
 * Default out-dir: certs/dev (git-ignored). Files: cert.pem, key.pem (mode 0600), cert.sha256.
 */
import { makeDevCertificate } from "@omega/sync"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"

const args = process.argv.slice(2)
const outDir = Path.resolve(args.find((arg) => !arg.startsWith("--")) ?? Path.join(import.meta.dirname, "dev"))
const days = Number(args.find((arg) => arg.startsWith("--days="))?.slice("--days=".length) ?? "10")
const hosts = args.filter((arg) => arg.startsWith("--host=")).map((arg) => arg.slice("--host=".length))

const program = Effect.gen(function*() {
  const made = yield* makeDevCertificate({ days, ...(hosts.length > 0 && { hosts }) })
  Fs.mkdirSync(outDir, { recursive: true })
  Fs.writeFileSync(Path.join(outDir, "cert.pem"), made.certificate)
  Fs.writeFileSync(Path.join(outDir, "key.pem"), made.privateKey, { mode: 0o600 })
  Fs.chmodSync(Path.join(outDir, "key.pem"), 0o600)
  Fs.writeFileSync(Path.join(outDir, "cert.sha256"), `${made.sha256Hex}\n`)
  console.log(`wrote ${Path.join(outDir, "cert.pem")} and key.pem`)
  console.log(`valid ${made.notBefore.toISOString()} .. ${made.notAfter.toISOString()}`)
  console.log(`sha-256 pin (hex):    ${made.sha256Hex}`)
  console.log(`sha-256 pin (base64): ${made.sha256Base64}`)
})

Effect.runPromise(program).catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  process.exitCode = 1
})
