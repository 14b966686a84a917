/** Request fingerprints for Idempotency-Key replays (POST /tasks, POST /workflows). */
import { createHash } from 'node:crypto';

/** JSON with sorted keys, so the same request always has the same fingerprint. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** The SHA-256 (hex) of `v`'s canonical JSON. */
export function fingerprintOf(v: unknown): string {
  return createHash('sha256').update(canonical(v)).digest('hex');
}
