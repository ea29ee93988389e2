import { assert, describe, it } from "@effect/vitest"
import { Tokenizer } from "@huggingface/tokenizers"
import { EMBEDDING_DIMENSIONS } from "@omega/protocol"
import { Effect, type Layer, type Scope } from "effect"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { basename, join } from "node:path"
import { Embedder, type EmbedError } from "./Embedder.ts"
import { contentText, makeOnnx, OnnxEmbedder, type OnnxEmbedderOptions } from "./OnnxEmbedder.ts"
import {
  makeTinyBert,
  type TinyBert,
  tinyBertHiddenStates,
  type TinyBertLayout,
  writeTinyBert
} from "./testing/tinyBertModel.ts"

const tiny = makeTinyBert()

const tempDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "omega-onnx-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

/** Writes `model` into a temp dir that lives as long as the test's scope. */
const onDisk = (model: TinyBert, layout?: TinyBertLayout) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    yield* writeTinyBert(dir, model, layout)
    return dir
  })

const load = (model: TinyBert, options: Omit<OnnxEmbedderOptions, "modelDir"> = {}) =>
  Effect.gen(function*() {
    const modelDir = yield* onDisk(model)
    return yield* makeOnnx({ modelDir, ...options })
  })

/** Builds the layer, takes the service out and tears the layer down again. */
const fromLayer = (layer: Layer.Layer<Embedder, EmbedError>) =>
  Effect.gen(function*() {
    return yield* Embedder
  }).pipe(Effect.provide(layer))

/** What the embedder should return, computed without onnxruntime: encode, JS forward, mean, L2. */
const reference = (model: TinyBert, text: string): Float64Array => {
  const tokenizer = new Tokenizer(model.tokenizerJson, model.tokenizerConfig)
  const encoded = tokenizer.encode(text, { return_token_type_ids: true })
  const states = tinyBertHiddenStates(model, encoded.ids, encoded.token_type_ids, encoded.attention_mask)
  const mean = new Float64Array(model.hiddenSize)
  for (const state of states) state.forEach((v, j) => mean[j]! += v / states.length)
  const norm = Math.hypot(...mean)
  return mean.map((v) => v / norm)
}

const maxDifference = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.strictEqual(a.length, b.length)
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!))
  return max
}

const assertClose = (actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance = 1e-5) => {
  const difference = maxDifference(actual, expected)
  assert.isBelow(difference, tolerance, `vectors differ by up to ${difference}`)
}

const failure = <A>(effect: Effect.Effect<A, EmbedError, Scope.Scope>) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(Effect.scoped(effect))
    assert.strictEqual(error._tag, "EmbedError")
    return error
  })

// Each word below is one WordPiece token of the tiny vocabulary, so counting words counts tokens.
const words = ["toy", "story", "star", "wars", "space", "war", "love", "night", "day", "comedy", "drama", "action"]

describe("OnnxEmbedder", () => {
  it.effect("returns 384-d unit vectors equal to a plain JS forward pass of the same weights", () =>
    Effect.gen(function*() {
      const embedder = yield* load(tiny)
      assert.strictEqual(embedder.dimensions, EMBEDDING_DIMENSIONS)
      for (const text of ["Toy Story (1995)", "star wars: a space adventure", "LOVE in the Night", "dogs, ships", ""]) {
        const v = yield* embedder.embedText(text)
        assert.instanceOf(v, Float32Array)
        assert.strictEqual(v.length, EMBEDDING_DIMENSIONS)
        assert.closeTo(Math.hypot(...v), 1, 1e-6)
        assertClose(v, reference(tiny, text))
      }
    }))

  it.effect("is provided as Embedder by OnnxEmbedder.layer", () =>
    Effect.gen(function*() {
      const modelDir = yield* onDisk(tiny)
      yield* Effect.gen(function*() {
        const embedder = yield* Embedder
        assert.strictEqual(embedder.model, `onnx:${basename(modelDir)}`)
        assertClose(yield* embedder.embedText("space war"), reference(tiny, "space war"))
      }).pipe(Effect.provide(OnnxEmbedder.layer({ modelDir })))
    }))

  it.effect("maps out-of-vocabulary words to [UNK]", () =>
    Effect.gen(function*() {
      const tokenizer = new Tokenizer(tiny.tokenizerJson, tiny.tokenizerConfig)
      assert.deepStrictEqual(tokenizer.tokenize("zorblax toys"), ["[UNK]", "toy", "##s"])
      const embedder = yield* load(tiny)
      const unknown = yield* embedder.embedText("zorblax toys")
      assertClose(unknown, reference(tiny, "zorblax toys"))
      // Two different unknown words are the same [UNK] token, so the vectors coincide.
      assertClose(yield* embedder.embedText("quuxify toys"), unknown, 1e-7)
    }))

  it.effect("truncates to maxLength, keeping [CLS] and [SEP]", () =>
    Effect.gen(function*() {
      const embedder = yield* load(tiny, { maxLength: 8 })
      assert.strictEqual(embedder.maxLength, 8)
      const long = yield* embedder.embedText(words.join(" "))
      // 8 tokens = [CLS] + 6 words + [SEP].
      assertClose(long, reference(tiny, words.slice(0, 6).join(" ")))
      assert.isAbove(maxDifference(long, reference(tiny, words.slice(0, 7).join(" "))), 1e-3)
    }))

  it.effect("takes maxLength from tokenizer_config.json, capped at 256", () =>
    Effect.gen(function*() {
      const short = makeTinyBert({ modelMaxLength: 10 })
      const embedder = yield* load(short)
      assert.strictEqual(embedder.maxLength, 10)
      assertClose(yield* embedder.embedText(words.join(" ")), reference(short, words.slice(0, 8).join(" ")))

      const capped = yield* load(makeTinyBert({ modelMaxLength: 512 }))
      assert.strictEqual(capped.maxLength, 256)
      const text = Array.from({ length: 300 }, (_, i) => words[i % words.length]).join(" ")
      const truncated = text.split(" ").slice(0, 254).join(" ")
      assertClose(yield* capped.embedText(text), yield* capped.embedText(truncated), 1e-6)
    }))

  it.effect("batches with padding give the same vectors as one text at a time", () =>
    Effect.gen(function*() {
      const embedder = yield* load(tiny, { batchSize: 2 })
      const texts = ["toy", "star wars space war love night", "", "Toy Story (1995)", "drama"]
      const batched = yield* embedder.embedTexts(texts)
      assert.strictEqual(batched.length, texts.length)
      for (const [i, text] of texts.entries()) assertClose(batched[i]!, yield* embedder.embedText(text), 1e-6)
      assert.deepStrictEqual(yield* embedder.embedTexts([]), [])
    }))

  it.effect("embeds a catalog item as its title and genres", () =>
    Effect.gen(function*() {
      const embedder = yield* load(tiny)
      const item = { title: "Toy Story (1995)", genres: ["Animation", "Children", "Comedy"] }
      assert.strictEqual(contentText(item), "Toy Story (1995). Genres: Animation, Children, Comedy.")
      assertClose(yield* embedder.embedContent(item), reference(tiny, contentText(item)))
    }))

  it.effect("runs models without token_type_ids, stored as onnx/model.onnx", () =>
    Effect.gen(function*() {
      const untyped = makeTinyBert({ withTokenTypeIds: false, seed: 11 })
      const modelDir = yield* onDisk(untyped, "onnx-subdir")
      const embedder = yield* makeOnnx({ modelDir })
      assertClose(yield* embedder.embedText("night of the dog"), reference(untyped, "night of the dog"))
    }))

  it.effect("releases the ONNX session when the layer is torn down", () =>
    Effect.gen(function*() {
      const modelDir = yield* onDisk(tiny)
      const escaped = yield* fromLayer(OnnxEmbedder.layer({ modelDir }))
      const error = yield* Effect.flip(escaped.embedText("toy"))
      assert.include(error.message, "Session already disposed")
    }))
})

describe("OnnxEmbedder load errors", () => {
  it.effect("rejects a model whose hidden size is not 384", () =>
    Effect.gen(function*() {
      const modelDir = yield* onDisk(makeTinyBert({ hiddenSize: 16 }))
      const error = yield* failure(fromLayer(OnnxEmbedder.layer({ modelDir })))
      assert.include(error.message, "16-d")
      assert.include(error.message, "384")
    }))

  it.effect("rejects a missing model directory", () =>
    Effect.gen(function*() {
      const error = yield* failure(makeOnnx({ modelDir: join(tmpdir(), "omega-no-such-model-dir") }))
      assert.include(error.message, "does not exist")
    }))

  it.effect("rejects a directory without model.onnx or tokenizer.json", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      assert.include((yield* failure(makeOnnx({ modelDir: dir }))).message, "no tokenizer.json")
      yield* Effect.promise(() => writeFile(join(dir, "tokenizer.json"), JSON.stringify(tiny.tokenizerJson)))
      assert.include((yield* failure(makeOnnx({ modelDir: dir }))).message, "no ONNX model")
    }))

  it.effect("rejects a corrupt model file and a corrupt tokenizer.json", () =>
    Effect.gen(function*() {
      const dir = yield* onDisk(tiny)
      yield* Effect.promise(() => writeFile(join(dir, "model.onnx"), "not a protobuf"))
      assert.include((yield* failure(makeOnnx({ modelDir: dir }))).message, "cannot load ONNX model")

      const other = yield* onDisk(tiny, "onnx-subdir")
      yield* Effect.promise(() => writeFile(join(other, "tokenizer.json"), "{ truncated"))
      assert.include((yield* failure(makeOnnx({ modelDir: other }))).message, "not readable JSON")
    }))

  it.effect("rejects a maxLength with no room for text or beyond the model's limit", () =>
    Effect.gen(function*() {
      const dir = yield* onDisk(tiny)
      assert.include((yield* failure(makeOnnx({ modelDir: dir, maxLength: 2 }))).message, "maxLength")
      assert.include((yield* failure(makeOnnx({ modelDir: dir, maxLength: 600 }))).message, "model_max_length")
    }))
})
