/**
 * The dashboard's files at /ui: served without a key, with their content types and a strict
 * Content-Security-Policy, only from the package's ui/ folder; the data routes still need a key.
 * (The page itself is driven in a real browser by test/integration/dashboard.test.ts.)
 */
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryBroker } from '../common/broker/memory.ts';
import { silentLogger } from '../common/logger.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { createApp } from './app.ts';
import { UI_CSP, UI_FILES } from './ui.ts';

const app = createApp({
  store: new MemoryTaskStore(),
  broker: new MemoryBroker(),
  registry: defaultRegistry(),
  logger: silentLogger,
  options: { requestTopic: 'requests', bodyLimit: 65_536, requestTimeoutMs: 300, relayAfterMs: 5000, maxAttempts: 3, auth: { mode: 'keys', cacheMs: 0 } },
});
const get = (path: string, init?: RequestInit) => app.request(`http://localhost${path}`, init);

describe('GET /ui', () => {
  it('serves the page without a key, with a strict Content-Security-Policy', async () => {
    const res = await get('/ui');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toBe(UI_CSP);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const html = await res.text();
    expect(html).toContain('<script type="module" src="/ui/main.js"></script>');
    // No CDN, nothing inline for the policy to block.
    expect(html).not.toMatch(/(src|href)="https?:/);
    expect(html).not.toMatch(/<script>|<style|style="/);
  });

  it('serves every file of ui/ with its content type, and nothing else', async () => {
    const onDisk = readdirSync(new URL('../ui/', import.meta.url)).sort();
    expect([...UI_FILES.keys()]).toEqual(onDisk);
    const types: Record<string, string> = {
      js: 'text/javascript; charset=utf-8',
      css: 'text/css; charset=utf-8',
      svg: 'image/svg+xml',
      html: 'text/html; charset=utf-8',
    };
    let imports = 0;
    for (const name of onDisk) {
      const res = await get(`/ui/${name}`);
      expect(res.status, name).toBe(200);
      expect(res.headers.get('content-type'), name).toBe(types[name.split('.').pop() ?? '']);
      expect(res.headers.get('content-security-policy'), name).toBe(UI_CSP);
      const text = await res.text();
      if (name.endsWith('.js')) {
        // Modules import only each other, by relative path.
        for (const m of text.matchAll(/^import [^;]*? from '([^']+)';$/gm)) {
          imports++;
          expect(onDisk, `${name} imports ${m[1]}`).toContain(m[1]?.replace(/^\.\//, ''));
        }
        expect(text, name).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|eval\(|new Function/);
      }
    }
    expect(imports).toBeGreaterThan(10);
  });

  it('answers 404 for any other name, however it is spelled, and 405 for other methods', async () => {
    for (const path of [
      '/ui/nope.js',
      '/ui/..%2Fpackage.json',
      '/ui/%2e%2e%2fapi%2fui.ts',
      '/ui/__proto__',
      '/ui/constructor',
      '/ui/sub/main.js',
      '/ui/MAIN.JS',
    ]) {
      const res = await get(path);
      expect(res.status, path).toBe(404);
    }
    // `/ui/../package.json` is `/package.json` once parsed: not a dashboard path, so it needs a key.
    expect((await get('/ui/../package.json')).status).toBe(401);
    expect((await get('/ui/main.js', { method: 'POST' })).status).toBe(405);
    expect((await get('/ui', { method: 'DELETE' })).headers.get('allow')).toBe('GET');
  });

  it('leaves the data routes behind the key', async () => {
    expect((await get('/tasks')).status).toBe(401);
    expect((await get('/stats')).status).toBe(401);
  });
});
