/** The product version, from package.json (the OpenAPI document, the MCP server and the live-worker list show it). */
import { readFileSync } from 'node:fs';

export const PRODUCT_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
})();
