/**
 * The typed client is meant to run in browsers and edge runtimes too (README, "The typed
 * client"): the module graph it pulls in must hold no Node built-in and no OpenTelemetry SDK,
 * only `@opentelemetry/api`, zod and the client's own modules.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// Static imports and exports (`import … from '…'`, `export … from '…'`) and dynamic `import('…')`, type-only ones left out.
const IMPORT = /(?:^|\n)\s*(?:import|export)\s+(?!type\s)(?:[^'"`;]*?\sfrom\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function packagesOf(entry: string): { packages: Set<string>; files: string[] } {
  const packages = new Set<string>();
  const seen = new Set<string>();
  const todo = [resolve(ROOT, entry)];
  while (todo.length > 0) {
    const file = todo.pop() ?? '';
    if (seen.has(file)) continue;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? '';
      if (spec.startsWith('.')) todo.push(join(dirname(file), spec));
      else packages.add(spec);
    }
  }
  return { packages, files: [...seen].map((f) => f.slice(ROOT.length + 1)) };
}

describe('the typed client', () => {
  it('imports no Node built-in and no OpenTelemetry SDK, in any module it pulls in', () => {
    const { packages, files } = packagesOf('client/index.ts');
    expect(files.length).toBeGreaterThan(1);
    const bad = [...packages].filter((p) => p.startsWith('node:') || (p.startsWith('@opentelemetry/') && p !== '@opentelemetry/api'));
    expect(bad, `imported by ${files.join(', ')}`).toEqual([]);
    expect([...packages].sort()).toEqual(expect.arrayContaining(['@opentelemetry/api']));
  });

  it('the check sees a dynamic import of the SDK', () => {
    // The same walk on the SDK bootstrap finds what the client must not have.
    expect([...packagesOf('common/tracing-sdk.ts').packages]).toEqual(expect.arrayContaining(['@opentelemetry/sdk-node']));
  });
});
