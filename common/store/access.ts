/** What both store adapters share about tenants: the names of their limits, and the quota view. */
import type { QuotaUsage, TenantLimits } from './port.ts';

/** TenantLimits fields and their names in the store (and in the CLI, with `-` for `_`). */
export const LIMIT_FIELDS: readonly [keyof TenantLimits, string][] = [
  ['quotaUnits', 'quota_units'],
  ['quotaWindowSeconds', 'quota_window_seconds'],
  ['submitsPerSecond', 'submits_per_s'],
  ['readsPerSecond', 'reads_per_s'],
  ['maxRunning', 'max_running'],
];

/** Quota windows are aligned to the epoch: a 86400 s window starts at 00:00 UTC. */
export const windowStartOf = (now: number, windowMs: number): number => now - (now % windowMs);

/** The quota of a tenant at `now`, from its limits, the defaults, and its stored window (`start`, `spent`). */
export function quotaUsageOf(
  tenant: string,
  limits: TenantLimits,
  defaults: { quotaUnits: number; quotaWindowSeconds: number },
  stored: { start?: string | number; spent?: string | number },
  now: number,
): QuotaUsage {
  const units = limits.quotaUnits ?? defaults.quotaUnits;
  const windowSeconds = limits.quotaWindowSeconds ?? defaults.quotaWindowSeconds;
  const windowStart = windowStartOf(now, windowSeconds * 1000);
  const spent = Number(stored.start) === windowStart ? Number(stored.spent ?? 0) : 0;
  return { tenant, units, windowSeconds, spent, windowStart, resetsAt: windowStart + windowSeconds * 1000 };
}
