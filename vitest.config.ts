import { defineConfig } from 'vitest/config';

export default defineConfig({
  // graphql 16 ships CommonJS (`main`) and ESM (`module`) builds; Node loads the CommonJS one for
  // the libraries, so the project's own code must get the same copy (one realm for the schema).
  resolve: { alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }] },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
