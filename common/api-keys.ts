/**
 * API keys: `atq_` and 32 random bytes (base64url). Only their SHA-256 is stored. A plain
 * hash, not a slow password hash, is right here: the secret has 256 bits of entropy, so
 * there is nothing to guess, and a submit must not spend milliseconds checking it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { SCOPES, type ApiKeyRecord, type Scope } from './store/port.ts';
import { isTenant } from './task.ts';

export const API_KEY_RE = /^atq_[A-Za-z0-9_-]{43}$/;

export const hashApiKey = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** A new key: the secret (shown once) and the record to store under its hash. */
export function newApiKey(
  tenant: string,
  scopes: readonly Scope[],
  name: string | null,
  now = Date.now(),
): { secret: string; hash: string; key: ApiKeyRecord } {
  if (!isTenant(tenant))
    throw new TypeError(`tenant: lower-case letters, digits, "_" and "-", at most 63, starting with a letter or digit (got ${JSON.stringify(tenant)})`);
  if (scopes.length === 0) throw new TypeError(`scopes: at least one of ${SCOPES.join(', ')}`);
  const secret = `atq_${randomBytes(32).toString('base64url')}`;
  const key: ApiKeyRecord = { id: `key_${randomBytes(6).toString('hex')}`, tenant, scopes: [...new Set(scopes)], name, createdAt: now };
  return { secret, hash: hashApiKey(secret), key };
}

/** `tasks:write,tasks:read` → the scopes; an unknown one throws naming it. */
export function parseScopes(list: string): Scope[] {
  const scopes = list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of scopes)
    if (!(SCOPES as readonly string[]).includes(s)) throw new TypeError(`scopes: unknown scope ${JSON.stringify(s)}; known: ${SCOPES.join(', ')}`);
  if (scopes.length === 0) throw new TypeError(`scopes: at least one of ${SCOPES.join(', ')}`);
  return scopes as Scope[];
}
