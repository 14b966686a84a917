/**
 * The rate-limit headers of the IETF draft (draft-ietf-httpapi-ratelimit-headers):
 * `RateLimit-Policy: "submits";q=10;w=1` names the policy, its quota and window in seconds;
 * `RateLimit: "submits";r=7;t=1` the requests remaining and the seconds until the window resets.
 */
import type { RateState } from '../common/store/port.ts';

export function rateLimitHeaders(policy: 'submits' | 'reads', rate: RateState): Record<string, string> {
  const t = Math.max(1, Math.ceil(rate.resetMs / 1000));
  return {
    'RateLimit-Policy': `"${policy}";q=${rate.limit};w=1`,
    RateLimit: `"${policy}";r=${Math.max(0, rate.remaining)};t=${t}`,
  };
}
