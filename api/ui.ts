/**
 * The dashboard at GET /ui: plain HTML, CSS and ES-module files from the package's `ui/`
 * folder (no CDN, no build step), served without a key. The page itself calls the JSON API
 * with `Authorization: Bearer <key>`, so it sees what that key may see and nothing more.
 *
 * Only the files of `ui/` with a plain name and a known extension are served, read once; every
 * answer carries a strict Content-Security-Policy (scripts, styles and fetches from this origin
 * only, no inline code, no frames).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context, Hono } from 'hono';
import { MethodNotAllowedError, NotFoundError } from '../common/errors.ts';
import type { AppEnv } from './auth.ts';

const UI_DIR = fileURLToPath(new URL('../ui/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** The files GET /ui/{file} serves, name → content type: what `ui/` holds, read when the module loads. */
export const UI_FILES: ReadonlyMap<string, string> = new Map(
  readdirSync(UI_DIR)
    .filter((name) => /^[a-z0-9][a-z0-9-]*\.[a-z]+$/.test(name) && TYPES[extname(name)] !== undefined)
    .sort()
    .map((name) => [name, TYPES[extname(name)] ?? 'application/octet-stream']),
);

/** Paths of the dashboard's own files, which need no key. */
export const isUiPath = (path: string): boolean => path === '/ui' || path.startsWith('/ui/');

/** Same origin for everything, nothing inline, nothing framed; `data:` images for the favicon only. */
export const UI_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HEADERS = {
  'Content-Security-Policy': UI_CSP,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  // Revalidated on each load, so a new version of the package shows at once.
  'Cache-Control': 'no-cache',
};

const cache = new Map<string, Uint8Array>();

function fileBytes(name: string): Uint8Array {
  let bytes = cache.get(name);
  if (!bytes) {
    bytes = new Uint8Array(readFileSync(join(UI_DIR, name)));
    cache.set(name, bytes);
  }
  return bytes;
}

/** GET /ui (the page) and GET /ui/{file} (its scripts, styles and icon). */
export function mountUi(app: Hono<AppEnv>): void {
  app.get('/ui', (c) => c.body(new Uint8Array(fileBytes('index.html')), 200, { ...HEADERS, 'Content-Type': TYPES['.html'] ?? '' }));
  app.get('/ui/:file', (c) => {
    const name = c.req.param('file');
    const type = UI_FILES.get(name);
    if (type === undefined) throw new NotFoundError(`no file ${name.slice(0, 100)} in /ui`);
    return c.body(new Uint8Array(fileBytes(name)), 200, { ...HEADERS, 'Content-Type': type });
  });
  const notAllowed = (c: Context<AppEnv>) => {
    throw new MethodNotAllowedError(c.req.method, 'GET');
  };
  for (const path of ['/ui', '/ui/:file']) app.all(path, notAllowed);
}
