import { defineConfig } from "vitest/config"

// vitest 5 removed vitest.workspace.ts: the projects are listed here instead.
// CPU-bound tests (recall over 1,000 vectors, end-to-end rounds) take 2-6 s on this 2-core VM,
// whose speed varies up to threefold from hour to hour: 30 s instead of vitest's 5 s default.
const project = (name: string, root: string) => ({
  test: { name, root, include: ["**/*.test.ts"], exclude: ["**/node_modules/**", "**/dist/**"], testTimeout: 30_000 }
})

export default defineConfig({
  test: {
    projects: [
      project("protocol", "packages/protocol"),
      project("brain", "packages/brain"),
      project("constellation", "packages/constellation"),
      project("sync", "packages/sync"),
      project("sdk", "packages/sdk"),
      project("cli", "apps/cli"),
      project("constellation-server", "apps/constellation-server"),
      project("federation-worker", "apps/federation-worker"),
      project("e2e", "test")
    ]
  }
})
