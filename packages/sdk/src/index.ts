export * from "./OmegaError.ts"
export * from "./OmegaTv.ts"
