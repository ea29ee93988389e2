/** A client of a shard's management API, for the commands that drive a shard (simulate, loadtest). */
import { Data, Effect, Schema } from "effect"

/** A management API call failed, or answered with something its schema refuses. */
export class ShardApiError extends Data.TaggedError("ShardApiError")<{ readonly message: string }> {}

/**
 * Calls a shard's management API and decodes its answer with the API's own schema; anything but a
 * 2xx answer of that shape is a ShardApiError naming the call.
 */
export const callShardApi = <S extends Schema.Top>(
  api: string,
  method: "GET" | "POST",
  path: string,
  schema: S,
  body?: unknown
) =>
  Effect.gen(function*() {
    const fail = (why: string) => new ShardApiError({ message: `${method} ${path} on ${api}: ${why}` })
    const text = yield* Effect.tryPromise({
      try: async (interrupted) => {
        // `path` goes after whatever path `api` has (a proxy may serve the API under a prefix).
        const response = await fetch(`${api.replace(/\/+$/, "")}${path}`, {
          method,
          signal: AbortSignal.any([interrupted, AbortSignal.timeout(30_000)]),
          ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } })
        })
        const answer = await response.text()
        if (!response.ok) throw new Error(`${response.status} ${answer.slice(0, 200)}`)
        return answer
      },
      // fetch says only "fetch failed"; why (ECONNREFUSED, ENOTFOUND, ...) is in its cause.
      catch: (e) =>
        fail(
          e instanceof Error ?
            (e.cause instanceof Error ? `${e.message} (${e.cause.message})` : e.message) :
            String(e)
        )
    })
    const json = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: () => fail("not JSON") })
    return yield* Schema.decodeUnknownEffect(schema)(json).pipe(
      Effect.mapError((e) => fail(`unexpected answer: ${e.message}`))
    ) as Effect.Effect<S["Type"], ShardApiError>
  })
