/**
 * The admin routes (scope `admin`): API keys and a tenant's own limits, the same as
 * `npm run keys` does straight on Redis. The secret of a new key is in the 201 only.
 */
import type { Context, Hono } from 'hono';
import type { z } from 'zod';
import { newApiKey } from '../common/api-keys.ts';
import { NotFoundError, ValidationError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { ApiKeyRecord, TaskStore } from '../common/store/port.ts';
import { isTenant } from '../common/task.ts';
import { toQuotaView } from '../common/views.ts';
import type { AppEnv, DefaultLimits, Principal } from './auth.ts';
import { validationError } from './errors.ts';
import { readJsonBody } from './request.ts';
import { keyBody, limitsBody } from './schemas.ts';

type Env = AppEnv;

/** The admin routes and the methods each takes, for the 405s. */
export const ADMIN_METHODS: readonly [string, string][] = [
  ['/admin/keys', 'GET, POST'],
  ['/admin/keys/:keyId', 'DELETE'],
  ['/admin/tenants/:tenant', 'GET'],
  ['/admin/tenants/:tenant/limits', 'PUT'],
];

export function mountAdmin(
  app: Hono<Env>,
  deps: { store: TaskStore; logger: Logger; limits: DefaultLimits; bodyLimit: number; caller: (c: Context<Env>, scope: 'admin') => Promise<Principal> },
): void {
  const { store, logger, limits, caller, bodyLimit } = deps;

  const keyView = (k: ApiKeyRecord) => ({ id: k.id, tenant: k.tenant, scopes: k.scopes, name: k.name, created_at: new Date(k.createdAt).toISOString() });
  const tenantParam = (c: Context<Env>): string => {
    const t = c.req.param('tenant') ?? '';
    if (!isTenant(t))
      throw new ValidationError('tenant: lower-case letters, digits, "_" and "-", at most 63', [{ path: 'tenant', message: 'not a tenant name' }]);
    return t;
  };
  const jsonBody = async <T>(c: Context<Env>, schema: z.ZodType<T>): Promise<T> => {
    const parsed = schema.safeParse(await readJsonBody(c, bodyLimit));
    if (!parsed.success) throw validationError(parsed.error);
    return parsed.data;
  };
  const tenantView = async (tenant: string) => {
    const own = await store.tenantLimits(tenant);
    return {
      tenant,
      limits: {
        quota_units: own.quotaUnits ?? null,
        quota_window_seconds: own.quotaWindowSeconds ?? null,
        submits_per_s: own.submitsPerSecond ?? null,
        reads_per_s: own.readsPerSecond ?? null,
        max_running: own.maxRunning ?? null,
      },
      quota: toQuotaView(await store.quotaUsage(tenant, limits)),
    };
  };

  app.post('/admin/keys', async (c) => {
    await caller(c, 'admin');
    const b = await jsonBody(c, keyBody);
    const { secret, hash, key } = newApiKey(b.tenant, b.scopes, b.name ?? null);
    await store.createKey(key, hash);
    logger.info('api key created', { key_id: key.id, tenant: key.tenant, scopes: key.scopes });
    // The secret is in this answer only: it is never stored or logged.
    return c.json({ ...keyView(key), key: secret }, 201);
  });
  app.get('/admin/keys', async (c) => {
    await caller(c, 'admin');
    const tenant = c.req.query('tenant');
    if (tenant !== undefined && !isTenant(tenant)) throw new ValidationError('tenant: not a tenant name', [{ path: 'tenant', message: 'not a tenant name' }]);
    return c.json({ keys: (await store.listKeys(tenant)).map(keyView) });
  });
  app.delete('/admin/keys/:keyId', async (c) => {
    await caller(c, 'admin');
    const keyId = c.req.param('keyId');
    if (!/^key_[0-9a-f]{12}$/.test(keyId) || !(await store.revokeKey(keyId))) throw new NotFoundError(`no key ${keyId.slice(0, 40)}`);
    logger.info('api key revoked', { key_id: keyId });
    return c.json({ id: keyId, revoked: true });
  });
  app.get('/admin/tenants/:tenant', async (c) => {
    await caller(c, 'admin');
    return c.json(await tenantView(tenantParam(c)));
  });
  app.put('/admin/tenants/:tenant/limits', async (c) => {
    await caller(c, 'admin');
    const tenant = tenantParam(c);
    const b = await jsonBody(c, limitsBody);
    await store.setTenantLimits(tenant, {
      quotaUnits: b.quota_units,
      quotaWindowSeconds: b.quota_window_seconds,
      submitsPerSecond: b.submits_per_s,
      readsPerSecond: b.reads_per_s,
      maxRunning: b.max_running,
    });
    logger.info('tenant limits set', { tenant, ...b });
    return c.json(await tenantView(tenant));
  });
}
