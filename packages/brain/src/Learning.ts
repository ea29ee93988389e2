/**
 * How viewing turns into patterns, as pure functions the brain's learning loops call:
 * fold one event into a pattern (every event), merge near-duplicate patterns (every
 * session), and let old evidence fade (every day).
 */
import {
  type ContentId,
  type PatternContext,
  type PatternId,
  SUCCESS_WATCH_SHARE,
  type ViewContext,
  type ViewingEvent
} from "@omega/protocol"
import { Duration } from "effect"
import type { LocalPattern } from "./BrainStore.ts"
import { normalize } from "./Embedder.ts"

export interface LearningConfig {
  /** Cosine similarity at which an event joins an existing pattern of the same context. */
  readonly assignThreshold: number
  /** Cosine similarity at which two patterns of the same context are merged. */
  readonly mergeThreshold: number
  /** Multiplier on sample counts for each day a pattern was not reinforced. */
  readonly dailyDecay: number
  /** Patterns whose decayed sample count falls below this are forgotten. */
  readonly forgetBelow: number
  /** How much a failed viewing moves a pattern's centroid, relative to a success. */
  readonly failurePull: number
  readonly sessionEvery: Duration.Input
  readonly dailyEvery: Duration.Input
}

export const defaultLearningConfig: LearningConfig = {
  assignThreshold: 0.8,
  mergeThreshold: 0.93,
  dailyDecay: 0.98,
  forgetBelow: 0.3,
  failurePull: 0.25,
  sessionEvery: Duration.minutes(30),
  dailyEvery: Duration.hours(24)
}

/** Whether a viewing counts as a success (watched through). */
export const isSuccess = (event: ViewingEvent): boolean => event.watchShare >= SUCCESS_WATCH_SHARE

/** The coarse context a pattern is learned in; recent watches stay out of it. */
export const patternContextOf = (context: ViewContext): PatternContext =>
  context.mood === undefined ?
    { timeOfDay: context.timeOfDay, dayType: context.dayType } :
    { timeOfDay: context.timeOfDay, dayType: context.dayType, mood: context.mood }

export const sameContext = (a: PatternContext, b: PatternContext): boolean =>
  a.timeOfDay === b.timeOfDay && a.dayType === b.dayType && a.mood === b.mood

// What a pattern of another time of day, day type or mood keeps of its weight.
const OTHER_TIME = 0.7
const OTHER_DAY = 0.8
const OTHER_MOOD = 0.8
const LOG_OTHER_TIME = Math.log(OTHER_TIME)
const LOG_OTHER_DAY = Math.log(OTHER_DAY)
const LOG_OTHER_MOOD = Math.log(OTHER_MOOD)

/** 1 for the same context, less the more it differs; a pattern without a field matches any. */
export const contextMatch = (pattern: PatternContext, context: PatternContext): number => {
  let match = 1
  if (pattern.timeOfDay !== undefined && pattern.timeOfDay !== context.timeOfDay) match *= OTHER_TIME
  if (pattern.dayType !== undefined && pattern.dayType !== context.dayType) match *= OTHER_DAY
  if (pattern.mood !== undefined && context.mood !== undefined && pattern.mood !== context.mood) match *= OTHER_MOOD
  return match
}

/** log(contextMatch(pattern, context)), a sum of constants: for ranking every pattern without a logarithm each. */
export const logContextMatch = (pattern: PatternContext, context: PatternContext): number =>
  (pattern.timeOfDay !== undefined && pattern.timeOfDay !== context.timeOfDay ? LOG_OTHER_TIME : 0) +
  (pattern.dayType !== undefined && pattern.dayType !== context.dayType ? LOG_OTHER_DAY : 0) +
  (pattern.mood !== undefined && context.mood !== undefined && pattern.mood !== context.mood ? LOG_OTHER_MOOD : 0)

/** Evidence-weighted quality of a local pattern. */
export const patternWeight = (p: { readonly successRate: number; readonly sampleCount: number }): number =>
  p.successRate * Math.log1p(p.sampleCount)

/** Folds one viewing of an item with embedding `item` into `pattern` (or starts a new one). */
export const foldObservation = (options: {
  readonly pattern: LocalPattern | undefined
  readonly newId: () => PatternId
  readonly event: ViewingEvent
  readonly item: Float32Array
  readonly version: number
  readonly config: LearningConfig
}): LocalPattern => {
  const { config, event, item, pattern, version } = options
  const success = isSuccess(event)
  const exemplar: ContentId | undefined = success ? event.contentId : pattern?.exemplar
  if (pattern === undefined) {
    return {
      id: options.newId(),
      embedding: Float32Array.from(item),
      successRate: success ? 1 : 0,
      sampleCount: 1,
      context: patternContextOf(event.context),
      createdAt: event.watchedAt,
      updatedAt: event.watchedAt,
      version,
      createdVersion: version,
      exemplar
    }
  }
  const n = pattern.sampleCount
  const pull = success ? 1 : config.failurePull
  const embedding = new Float32Array(item.length)
  for (let i = 0; i < item.length; i++) embedding[i] = pattern.embedding[i]! * n + item[i]! * pull
  return {
    ...pattern,
    embedding: normalize(embedding),
    successRate: (pattern.successRate * n + (success ? 1 : 0)) / (n + 1),
    sampleCount: n + 1,
    updatedAt: Math.max(pattern.updatedAt, event.watchedAt),
    version,
    exemplar
  }
}

/** Merges `b` into `a`: evidence-weighted centroid and success rate. */
export const mergePatterns = (a: LocalPattern, b: LocalPattern, version: number): LocalPattern => {
  const total = a.sampleCount + b.sampleCount
  const embedding = new Float32Array(a.embedding.length)
  for (let i = 0; i < embedding.length; i++) {
    embedding[i] = a.embedding[i]! * a.sampleCount + b.embedding[i]! * b.sampleCount
  }
  return {
    ...a,
    embedding: normalize(embedding),
    successRate: total === 0 ? a.successRate : (a.successRate * a.sampleCount + b.successRate * b.sampleCount) / total,
    sampleCount: total,
    createdAt: Math.min(a.createdAt, b.createdAt),
    updatedAt: Math.max(a.updatedAt, b.updatedAt),
    exemplar: b.updatedAt > a.updatedAt && b.exemplar !== undefined ? b.exemplar : a.exemplar,
    version
  }
}

/** Applies `days` of decay to a pattern's evidence; undefined means it should be forgotten. */
export const decayPattern = (
  p: LocalPattern,
  days: number,
  version: number,
  config: LearningConfig
): LocalPattern | undefined => {
  if (days <= 0) return p
  const sampleCount = p.sampleCount * Math.pow(config.dailyDecay, days)
  return sampleCount < config.forgetBelow ? undefined : { ...p, sampleCount, version }
}
