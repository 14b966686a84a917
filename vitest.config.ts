import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['api/**/*.test.ts', 'worker/**/*.test.ts', 'common/**/*.test.ts', 'client/**/*.test.ts', 'mcp/**/*.test.ts', 'infra/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          // Starts Redis, Kafka and RocketMQ once for the whole run (see test/setup/services.ts).
          globalSetup: ['test/setup/services.ts'],
          // The services and the child processes share 2 cores: one file at a time.
          poolOptions: { forks: { singleFork: true } },
          testTimeout: 180_000,
          hookTimeout: 240_000,
        },
      },
    ],
  },
});
