/**
 * Cron expressions and time zones, with croner: checking them, and the slots they fire at.
 * Only the pattern is used (no croner timers): the Scheduler decides when to fire.
 */
import { Cron } from 'croner';

/** 5 fields (minute precision), 6 (a leading seconds field) or 7 (a trailing year), or a nickname such as `@daily`. */
export const MAX_CRON_LENGTH = 200;
const TIME_ZONE_RE = /^[A-Za-z][A-Za-z0-9_+-]*(?:\/[A-Za-z0-9_+-]+){0,3}$/;

/** The canonical IANA name of a time zone (`europe/berlin` → `Europe/Berlin`), or null for one this runtime does not know. */
export function canonicalTimeZone(tz: string): string | null {
  if (tz.length > 64 || !TIME_ZONE_RE.test(tz)) return null;
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

/** The pattern, read in `timezone`; throws a croner error (a TypeError naming the field) for a bad one. */
export function cronOf(expr: string, timezone: string): Cron {
  if (expr.length > MAX_CRON_LENGTH) throw new TypeError(`at most ${MAX_CRON_LENGTH} characters`);
  return new Cron(expr, { timezone });
}

/** The first slot strictly after `after` (epoch ms), or null when there is none. */
export function slotAfter(cron: Cron, after: number): number | null {
  return cron.nextRun(new Date(after))?.getTime() ?? null;
}

/** Up to `n` slots from `from` on (`from` itself included when it is a slot). */
export function slotsFrom(cron: Cron, from: number, n: number): number[] {
  const first = slotAfter(cron, from - 1);
  if (first === null || n <= 0) return [];
  return [first, ...cron.nextRuns(n - 1, new Date(first)).map((d) => d.getTime())];
}
