export * from "./Embedder.ts"
