/**
 * Who is calling: the API key of `Authorization: Bearer <key>`, verified against the store
 * and cached in the process for a few seconds (so a revoked key stops working within
 * `cacheMs`, and a submit costs no extra round trip). With AUTH=off every caller is the
 * default tenant with every scope.
 */
import { API_KEY_RE, hashApiKey } from '../common/api-keys.ts';
import { ForbiddenError, UnauthorizedError } from '../common/errors.ts';
import { SCOPES, type Scope, type TaskStore, type TenantLimits } from '../common/store/port.ts';
import { DEFAULT_TENANT } from '../common/task.ts';

export interface Principal {
  tenant: string;
  scopes: ReadonlySet<Scope>;
  /** Null with AUTH=off. */
  keyId: string | null;
  /** The tenant's own limits, as of when the key was verified. */
  limits: TenantLimits;
}

/** The deployment's default limits per tenant (a tenant's own win); 0 = none. */
export interface DefaultLimits {
  submitsPerSecond: number;
  readsPerSecond: number;
  /** 0 = unlimited. */
  quotaUnits: number;
  quotaWindowSeconds: number;
}

/** Hono's context variables: the caller (set by the auth middleware) and the request id (set by the access log). */
export type AppEnv = { Variables: { principal: Principal; requestId: string } };

export interface AuthOptions {
  mode: 'keys' | 'off';
  /** How long a verified (or refused) key is remembered. Default 3000 ms. */
  cacheMs?: number;
  /** Cached keys at most; past it the cache starts over. Default 10 000. */
  maxCached?: number;
}

export class Authenticator {
  private readonly cache = new Map<string, { principal: Principal | null; at: number }>();
  private readonly cacheMs: number;
  private readonly maxCached: number;

  constructor(
    private readonly store: TaskStore,
    readonly options: AuthOptions,
  ) {
    this.cacheMs = options.cacheMs ?? 3000;
    this.maxCached = options.maxCached ?? 10_000;
  }

  /** The caller of a request with this Authorization header; throws the 401. */
  async authenticate(header: string | undefined): Promise<Principal> {
    if (this.options.mode === 'off') return this.anonymous();
    if (header === undefined || header === '') throw new UnauthorizedError('an API key is required: send Authorization: Bearer <key>');
    // Checked before anything is hashed or looked up: a huge or odd header costs nothing.
    const m = /^Bearer ([!-~]{1,200})$/i.exec(header);
    if (!m) throw new UnauthorizedError('Authorization: must be "Bearer <key>"', 'invalid_request');
    const secret = m[1] ?? '';
    if (!API_KEY_RE.test(secret)) throw new UnauthorizedError('the API key is not valid', 'invalid_token');
    const hash = hashApiKey(secret);
    const now = Date.now();
    const hit = this.cache.get(hash);
    let principal: Principal | null;
    if (hit && now - hit.at < this.cacheMs) principal = hit.principal;
    else {
      principal = await this.lookup(hash);
      if (this.cache.size >= this.maxCached) this.cache.clear();
      this.cache.set(hash, { principal, at: now });
    }
    if (!principal) throw new UnauthorizedError('the API key is unknown or revoked', 'invalid_token');
    return principal;
  }

  private async lookup(hash: string): Promise<Principal | null> {
    const key = await this.store.findKey(hash);
    if (!key) return null;
    const limits = await this.store.tenantLimits(key.tenant);
    return { tenant: key.tenant, scopes: new Set(key.scopes), keyId: key.id, limits };
  }

  private anonymousPrincipal: { principal: Principal; at: number } | undefined;

  /** AUTH=off: the default tenant, whose limits are re-read every `cacheMs` like a key's. */
  private async anonymous(): Promise<Principal> {
    const now = Date.now();
    if (!this.anonymousPrincipal || now - this.anonymousPrincipal.at >= this.cacheMs) {
      const limits = await this.store.tenantLimits(DEFAULT_TENANT);
      this.anonymousPrincipal = { principal: { tenant: DEFAULT_TENANT, scopes: new Set(SCOPES), keyId: null, limits }, at: now };
    }
    return this.anonymousPrincipal.principal;
  }
}

/** Throws the 403 unless the caller has `scope`. */
export function requireScope(p: Principal, scope: Scope): void {
  if (!p.scopes.has(scope)) throw new ForbiddenError(scope);
}
