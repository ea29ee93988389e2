/** A free TCP port on loopback, for the ports of a shard a command or test starts. */
import { Effect } from "effect"
import { createServer } from "node:net"

/** A port nothing listens on right now (the shard's HTTP ports; UDP for QUIC is picked the same way). */
export const freePort = () =>
  Effect.promise(() =>
    new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        server.close(() => typeof address === "object" && address !== null ? resolve(address.port) : reject())
      })
    })
  )
