import { defineConfig } from "vitest/config"

// vitest 5 removed vitest.workspace.ts: the projects are listed here instead.
const project = (name: string, root: string) => ({
  test: { name, root, include: ["**/*.test.ts"], exclude: ["**/node_modules/**", "**/dist/**"] }
})

export default defineConfig({
  test: {
    projects: [
      project("protocol", "packages/protocol"),
      project("brain", "packages/brain"),
      project("constellation", "packages/constellation"),
      project("sync", "packages/sync"),
      project("cli", "apps/cli"),
      project("constellation-server", "apps/constellation-server"),
      project("e2e", "test")
    ]
  }
})
