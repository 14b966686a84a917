/**
 * `npm run keys -- <command>`: API keys and tenant limits, straight on the deployment's Redis
 * (the same REDIS_* settings as the API). `create` prints the new key alone on stdout, so a
 * script can capture it; everything else a person reads goes to stderr.
 */
import { parseArgs } from 'node:util';
import { newApiKey, parseScopes } from './common/api-keys.ts';
import { errorMessage } from './common/errors.ts';
import { LIMIT_FIELDS } from './common/store/access.ts';
import type { TaskStore, TenantLimits } from './common/store/port.ts';
import { isTenant } from './common/task.ts';
import { createStore, loadConfigOrExit, processLogger } from './common/wiring.ts';

const USAGE = `usage: npm run keys -- <command>
  create --tenant <name> --scopes <scope,...> [--name <label>]   prints the new key (shown once)
  list [--tenant <name>]                                          keys (never the secrets)
  revoke <key id>                                                 the key stops working within 5 s
  tenant <name> [--quota-units N] [--quota-window-seconds N] [--submits-per-s N]
                [--reads-per-s N] [--max-running N]               shows (and sets) a tenant's own limits;
                                                                  "default" as a value clears one
scopes: tasks:write, tasks:read, admin`;

class UsageError extends Error {}

function tenantArg(v: string | undefined, what = '--tenant'): string {
  if (v === undefined) throw new UsageError(`${what} is required`);
  if (!isTenant(v)) throw new UsageError(`${what}: lower-case letters, digits, "_" and "-", at most 63 (got ${JSON.stringify(v)})`);
  return v;
}

const out = (line: string) => process.stdout.write(`${line}\n`);
const say = (line: string) => process.stderr.write(`${line}\n`);

async function run(store: TaskStore, argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'create': {
      const { values } = parseArgs({ args: rest, options: { tenant: { type: 'string' }, scopes: { type: 'string' }, name: { type: 'string' } } });
      const tenant = tenantArg(values.tenant);
      if (values.scopes === undefined) throw new UsageError('--scopes is required, e.g. --scopes tasks:write,tasks:read');
      let scopes;
      try {
        scopes = parseScopes(values.scopes);
      } catch (err) {
        throw new UsageError(errorMessage(err));
      }
      const { secret, hash, key } = newApiKey(tenant, scopes, values.name ?? null);
      await store.createKey(key, hash);
      say(`created ${key.id} for tenant ${tenant} with ${scopes.join(', ')}; the key is shown only now:`);
      out(secret);
      return;
    }
    case 'list': {
      const { values } = parseArgs({ args: rest, options: { tenant: { type: 'string' } } });
      const tenant = values.tenant === undefined ? undefined : tenantArg(values.tenant);
      const keys = await store.listKeys(tenant);
      if (keys.length === 0) say('no keys');
      for (const k of keys) out([k.id, k.tenant, k.scopes.join(','), new Date(k.createdAt).toISOString(), k.name ?? ''].join('\t'));
      return;
    }
    case 'revoke': {
      const id = rest[0];
      if (!id || !/^key_[0-9a-f]{12}$/.test(id)) throw new UsageError('revoke needs a key id (key_ and 12 hex digits; see list)');
      if (!(await store.revokeKey(id))) throw new UsageError(`no key ${id}`);
      say(`revoked ${id}; API processes drop it from their cache within 5 s`);
      return;
    }
    case 'tenant': {
      const tenant = tenantArg(rest[0], 'tenant name');
      const options = Object.fromEntries(LIMIT_FIELDS.map(([, name]) => [name.replace(/_/g, '-'), { type: 'string' as const }]));
      const { values } = parseArgs({ args: rest.slice(1), options });
      const change: { [K in keyof TenantLimits]?: number | null } = {};
      for (const [field, name] of LIMIT_FIELDS) {
        const v = values[name.replace(/_/g, '-')];
        if (typeof v !== 'string') continue;
        if (v === 'default') change[field] = null;
        else if (/^\d{1,10}$/.test(v)) change[field] = Number(v);
        else throw new UsageError(`--${name.replace(/_/g, '-')}: a whole number >= 0, or "default" (got ${JSON.stringify(v)})`);
      }
      if (change.quotaWindowSeconds === 0) throw new UsageError('--quota-window-seconds must be at least 1');
      const limits = Object.keys(change).length > 0 ? await store.setTenantLimits(tenant, change) : await store.tenantLimits(tenant);
      out(JSON.stringify({ tenant, limits: Object.fromEntries(LIMIT_FIELDS.map(([field, name]) => [name, limits[field] ?? 'default'])) }));
      return;
    }
    default:
      throw new UsageError(command ? `unknown command ${JSON.stringify(command)}` : 'no command');
  }
}

const config = loadConfigOrExit();
if (config.store !== 'redis') {
  say(
    'keys live in Redis: set STORE=redis (or a real BROKER) and REDIS_*.\n' +
      'With the embedded in-process store the API prints a bootstrap key at start (AUTH=keys); make others with POST /admin/keys.',
  );
  process.exit(2);
}
// Quiet: a person reads this tool's stderr, a script its stdout.
const logger = processLogger({ ...config, log: { ...config.log, level: 'error' } }, 'keys');
const store = await createStore(config, logger);
let code = 0;
try {
  await run(store, process.argv.slice(2));
} catch (err) {
  say(err instanceof UsageError ? `${err.message}\n\n${USAGE}` : `failed: ${errorMessage(err)}`);
  code = err instanceof UsageError ? 2 : 1;
} finally {
  await store.close();
}
process.exit(code);
