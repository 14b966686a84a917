/**
 * What a tenant over its limits is told: the rate-limit headers of the IETF draft
 * (draft-ietf-httpapi-ratelimit-headers) and the 429s of a rate limit and of a short quota,
 * one wording for tasks, workflows, reruns and reads.
 *
 * `RateLimit-Policy: "submits";q=10;w=1` names the policy, its quota and window in seconds;
 * `RateLimit: "submits";r=7;t=1` the requests remaining and the seconds until the window resets.
 */
import { TooManyRequestsError } from './errors.ts';
import type { QuotaUsage, RateState } from './store/port.ts';

export type RatePolicy = 'submits' | 'reads';

export function rateLimitHeaders(policy: RatePolicy, rate: RateState): Record<string, string> {
  const t = Math.max(1, Math.ceil(rate.resetMs / 1000));
  return {
    'RateLimit-Policy': `"${policy}";q=${rate.limit};w=1`,
    RateLimit: `"${policy}";r=${Math.max(0, rate.remaining)};t=${t}`,
  };
}

/** The 429 of a tenant over its `policy` rate, with Retry-After and the RateLimit headers. */
export function rateLimitedError(tenant: string, policy: RatePolicy, rate: RateState): TooManyRequestsError {
  const after = Math.max(1, Math.ceil(rate.resetMs / 1000));
  return new TooManyRequestsError(
    'rate_limited',
    `tenant ${tenant} is over its limit of ${rate.limit} ${policy} per second; retry after ${after} s`,
    after,
    rateLimitHeaders(policy, rate),
  );
}

/**
 * The 429 of a tenant short of quota units: how many are left of how many, what `what` costs
 * (e.g. "a report task costs 5"), and when the window resets (Retry-After).
 */
export function quotaExceededError(
  tenant: string,
  usage: Pick<QuotaUsage, 'units' | 'spent' | 'windowSeconds' | 'resetsAt'>,
  retryAfterMs: number,
  what: string,
): TooManyRequestsError {
  return new TooManyRequestsError(
    'quota_exceeded',
    `tenant ${tenant} has ${usage.units - usage.spent} of its ${usage.units} quota units left in this ${usage.windowSeconds} s window, and ${what}; the window resets at ${new Date(usage.resetsAt).toISOString()}`,
    Math.max(1, Math.ceil(retryAfterMs / 1000)),
  );
}
