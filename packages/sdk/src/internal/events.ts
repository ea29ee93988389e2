/**
 * The app's event listeners, and the session state they are told about. Events come in from the
 * sync client's subscription (`dispatch`); a listener added while a session is open is first told
 * of that session, so an app that registers after `open` resolved still learns it is online.
 */
import type { DisconnectReason, SyncEvent } from "@omega/sync"

/**
 * What the TV's session did, for an app that shows it: a session opened or ended, or an update the
 * shard pushed changed what the brain recommends (a good moment to refresh a row of suggestions).
 */
export type TvEvent =
  | { readonly type: "connected"; readonly session: number }
  | { readonly type: "disconnected"; readonly reason: DisconnectReason; readonly message: string }
  | { readonly type: "global-patterns"; readonly version: number; readonly patterns: number; readonly trends: number }
  | { readonly type: "co-watch"; readonly version: number; readonly rows: number }
  | { readonly type: "content"; readonly items: number }

/** What it returns is ignored, except that a promise that rejects is reported like a throw. */
export type TvEventListener = (event: TvEvent) => unknown

export class TvEvents {
  readonly #listeners = new Set<TvEventListener>()
  /** The open session as last dispatched, or undefined while there is none. */
  #session: number | undefined
  readonly #report: (failure: unknown, event: TvEvent) => void

  /** `report` hears of every listener that threw or rejected; the others are called regardless. */
  constructor(report: (failure: unknown, event: TvEvent) => void) {
    this.#report = report
  }

  /**
   * Adds a listener; while a session is open it is told of it first (on a microtask, not inside
   * this call), unless the session ended by then. Returns the function that removes it.
   */
  add(listener: TvEventListener): () => void {
    this.#listeners.add(listener)
    const session = this.#session
    if (session !== undefined) {
      queueMicrotask(() => {
        if (this.#listeners.has(listener) && this.#session === session) {
          this.#call(listener, { type: "connected", session })
        }
      })
    }
    return () => {
      this.#listeners.delete(listener)
    }
  }

  /** Tells every listener registered now (not one added by another listener during this call). */
  dispatch(event: TvEvent): void {
    if (event.type === "connected") this.#session = event.session
    if (event.type === "disconnected") this.#session = undefined
    // A copy: a Set's iteration would also visit a listener that one of these adds.
    const registered = Array.from(this.#listeners)
    for (const listener of registered) this.#call(listener, event)
  }

  clear(): void {
    this.#listeners.clear()
  }

  #call(listener: TvEventListener, event: TvEvent): void {
    try {
      const result: unknown = listener(event)
      if (isThenable(result)) result.then(undefined, (failure: unknown) => this.#report(failure, event))
    } catch (failure) {
      this.#report(failure, event)
    }
  }
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function"

export const toTvEvent = (event: SyncEvent): TvEvent => {
  switch (event._tag) {
    case "Connected":
      return { type: "connected", session: event.session }
    case "Disconnected":
      return { type: "disconnected", reason: event.reason, message: event.message }
    case "GlobalPatternsApplied":
      return { type: "global-patterns", version: event.version, patterns: event.patterns, trends: event.trends }
    case "CoWatchApplied":
      return { type: "co-watch", version: event.version, rows: event.rows }
    case "ContentAdded":
      return { type: "content", items: event.items }
  }
}
