import { assert, describe, it } from "@effect/vitest"
import { existsSync } from "node:fs"
import { defaultReceiveBufferBytes, udpReceiveBufferErrors } from "./UdpBuffers.ts"

describe("UDP receive buffers", () => {
  it.skipIf(!existsSync("/proc/net/snmp"))("reads the kernel's default buffer and its drop counter on Linux", () => {
    const bytes = defaultReceiveBufferBytes()
    const drops = udpReceiveBufferErrors()
    assert.isTrue(bytes !== undefined && Number.isInteger(bytes) && bytes > 0, `rmem_default ${bytes}`)
    assert.isTrue(drops !== undefined && Number.isInteger(drops) && drops >= 0, `RcvbufErrors ${drops}`)
  })
})
