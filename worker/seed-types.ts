/**
 * Seed 000's three asynchronous task types, modelled on the demo `agent` type: real,
 * deterministic work on the input with progress and no network.
 *
 * - `options_analysis_workflow`: prices an options strategy's legs (Black–Scholes), solves each
 *   leg's implied volatility from its premium, and computes the payoff at expiry (breakevens,
 *   maximum profit and loss, probability of profit) and price/volatility scenarios. 5 units.
 * - `multi_agent_report`: a report on the same figures, written by four analysts (Greeks,
 *   volatility, market, risk) and a synthesizer with `use_multi_agent`, or by one agent
 *   without. 5 units or 1; when the quota is short it downgrades to single-agent.
 * - `stock_screening_workflow`: ranks a sector's universe (generated from a seeded hash, so the
 *   same sector always gives the same stocks) on value, growth, momentum and stability and
 *   answers the top `limit`. `min(5, 2 + (limit * 2) // 10)` units.
 *
 * Each takes `simulate_ms` (milliseconds per step, to show how a slow model behaves; honours
 * cancellation) and `fail_times` (test hook: fail the first N attempts with a retryable error).
 */
import { z } from 'zod';
import { delay } from '../common/backoff.ts';
import { defineTaskType, type HandlerContext } from '../common/registry.ts';

// ---------------------------------------------------------------------------------------------
// Input schemas
// ---------------------------------------------------------------------------------------------

/** The message of a missing or mistyped field: "is required", or "must be <what>". */
const expected = (what: string) => ({ error: (iss: { input?: unknown }) => (iss.input === undefined ? 'is required' : `must be ${what}`) });

const simulateMs = z
  .number(expected('a number of milliseconds'))
  .int('must be a whole number of milliseconds')
  .min(0, 'must be 0 or more')
  .max(600_000, 'must be at most 600000 (10 minutes)')
  .optional();
const failTimes = z.number(expected('a whole number')).int('must be a whole number').min(0, 'must be 0 or more').max(100, 'must be at most 100').optional();

export const optionLeg = z.strictObject(
  {
    side: z.enum(['buy', 'sell'], expected('"buy" or "sell"')),
    type: z.enum(['call', 'put'], expected('"call" or "put"')),
    /** Strike price, in the underlying's currency. */
    strike: z.number(expected('a number')).positive('must be greater than 0').max(10_000_000, 'must be at most 10000000'),
    /** Premium per share (not per contract) paid for a buy or received for a sell. */
    premium: z.number(expected('a number')).min(0, 'must be 0 or more').max(10_000_000, 'must be at most 10000000'),
    /** Contracts. Default 1. */
    quantity: z.number(expected('a whole number')).int('must be a whole number').min(1, 'must be at least 1').max(10_000, 'must be at most 10000').default(1),
  },
  expected('an object (a leg: side, type, strike, premium, quantity)'),
);
export type OptionLeg = z.infer<typeof optionLeg>;

/**
 * An options strategy. A defined shape rather than a free-form object, so the figures can be
 * computed and a typo is reported instead of being ignored. All legs share one expiry.
 */
export const strategySummary = z.strictObject(
  {
    /** Ticker of the underlying, upper case: `AAPL`, `BRK.B`. */
    symbol: z.string(expected('a string')).regex(/^[A-Z][A-Z0-9.-]{0,11}$/, 'must be an upper-case ticker such as AAPL or BRK.B (at most 12 characters)'),
    /** The strategy's name, free text: `bull call spread`, `iron condor`. */
    strategy: z.string(expected('a string')).trim().min(1, 'must not be empty').max(100, 'must be at most 100 characters').optional(),
    /** Current price of the underlying. */
    underlying_price: z.number(expected('a number')).positive('must be greater than 0').max(10_000_000, 'must be at most 10000000'),
    /** Calendar days until the legs expire. Default 30. */
    days_to_expiry: z
      .number(expected('a whole number'))
      .int('must be a whole number of days')
      .min(1, 'must be at least 1')
      .max(3650, 'must be at most 3650')
      .default(30),
    /** Annualised volatility assumed by the model, as a fraction (0.3 = 30%). Default 0.3. */
    implied_volatility: z.number(expected('a number')).min(0.01, 'must be at least 0.01 (1%)').max(5, 'must be at most 5 (500%)').default(0.3),
    /** Annual risk-free rate, as a fraction. Default 0. */
    risk_free_rate: z.number(expected('a number')).min(0, 'must be 0 or more').max(0.25, 'must be at most 0.25').default(0),
    /** Shares per contract. Default 100. */
    contract_multiplier: z
      .number(expected('a whole number'))
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .max(10_000, 'must be at most 10000')
      .default(100),
    /** The legs. Without them only the volatility and market figures are computed. */
    legs: z.array(optionLeg, expected('an array of legs')).max(20, 'must have at most 20 legs').default([]),
  },
  expected('an object (the strategy: symbol, underlying_price, legs, ...)'),
);
export type StrategySummary = z.infer<typeof strategySummary>;

export const multiAgentReportInput = z.strictObject(
  {
    strategy_summary: strategySummary,
    /** Four analysts and a synthesizer (5 units) instead of one agent (1 unit). Default false. */
    use_multi_agent: z.boolean(expected('true or false')).default(false),
    simulate_ms: simulateMs,
    fail_times: failTimes,
  },
  expected('an object'),
);
export type MultiAgentReportInput = z.infer<typeof multiAgentReportInput>;

export const optionsAnalysisInput = z.strictObject(
  {
    strategy_summary: strategySummary,
    /** Add a `metadata` block (model, settings, digest of the strategy). Default false. */
    include_metadata: z.boolean(expected('true or false')).default(false),
    simulate_ms: simulateMs,
    fail_times: failTimes,
  },
  expected('an object'),
);
export type OptionsAnalysisInput = z.infer<typeof optionsAnalysisInput>;

export const stockScreeningInput = z.strictObject(
  {
    /** Any sector name: `Technology`, `Healthcare`, `半导体`. Case and surrounding spaces do not change the universe. */
    sector: z.string(expected('a string')).trim().min(1, 'must not be empty').max(64, 'must be at most 64 characters'),
    /** Candidates to answer, 1..100. */
    limit: z.number(expected('a whole number')).int('must be a whole number').min(1, 'must be at least 1').max(100, 'must be at most 100'),
    /** Keep only companies at least this large, in billions. */
    min_market_cap_b: z.number(expected('a number')).min(0, 'must be 0 or more').optional(),
    /** Keep only profitable companies with a P/E at most this. */
    max_pe: z.number(expected('a number')).positive('must be greater than 0').optional(),
    /** Keep only candidates scoring at least this (0..100). */
    min_score: z.number(expected('a number')).min(0, 'must be 0 or more').max(100, 'must be at most 100').optional(),
    simulate_ms: simulateMs,
    fail_times: failTimes,
  },
  expected('an object'),
);
export type StockScreeningInput = z.infer<typeof stockScreeningInput>;

// ---------------------------------------------------------------------------------------------
// Quota costs (seed 000)
// ---------------------------------------------------------------------------------------------

export const MULTI_AGENT_COST = 5;
export const SINGLE_AGENT_COST = 1;
export const OPTIONS_ANALYSIS_COST = 5;

/** Seed 000: `min(5, 2 + (limit * 2) // 10)` — 2 for 1..4, 3 for 5..9, 4 for 10..14, 5 from 15. */
export const stockScreeningCost = (input: Pick<StockScreeningInput, 'limit'>): number => Math.min(5, 2 + Math.floor((input.limit * 2) / 10));

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

function failIfAsked(ctx: HandlerContext, failTimes: number | undefined): void {
  if (failTimes !== undefined && ctx.attempt <= failTimes) throw new Error(`simulated failure on attempt ${ctx.attempt} of ${failTimes}`);
}

/** FNV-1a, 32 bits. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
const hex = (n: number) => n.toString(16).padStart(8, '0');

/** mulberry32: a small seeded generator of numbers in [0, 1). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rounds to `d` decimals, without answering -0. */
const round = (x: number, d = 2): number => {
  const f = 10 ** d;
  return Math.round(x * f) / f || 0;
};
const fmt = (x: number, d = 2) => x.toFixed(d);
const pct = (x: number, d = 1) => `${(x * 100).toFixed(d)}%`;
const money = (x: number | 'unlimited') => (x === 'unlimited' ? 'unlimited' : fmt(x));
const signed = (n: number) => (n > 0 ? `+${n}` : `${n}`);

/** Streams `text` in chunks of `lines` lines, as an LLM streams tokens. */
async function stream(ctx: HandlerContext, text: string, lines: number, stepMs: number): Promise<void> {
  const all = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  for (let i = 0; i < all.length; i += lines) {
    await ctx.partial(all.slice(i, i + lines).join(''));
    await delay(Math.floor(stepMs / 8), ctx.signal);
  }
}

// ---------------------------------------------------------------------------------------------
// Options maths: Black–Scholes–Merton without dividends
// ---------------------------------------------------------------------------------------------

const normPdf = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

/** Standard normal CDF (Abramowitz & Stegun 7.1.26, error < 1.5e-7). */
function normCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

interface Priced {
  price: number;
  delta: number;
  gamma: number;
  /** Per calendar day. */
  theta: number;
  /** Per volatility point (0.01). */
  vega: number;
  /** Risk-neutral probability of expiring in the money. */
  probItm: number;
}

function blackScholes(type: 'call' | 'put', s: number, k: number, t: number, sigma: number, r: number): Priced {
  const sq = Math.sqrt(t);
  const d1 = (Math.log(s / k) + (r + (sigma * sigma) / 2) * t) / (sigma * sq);
  const d2 = d1 - sigma * sq;
  const disc = k * Math.exp(-r * t);
  const gamma = normPdf(d1) / (s * sigma * sq);
  const vega = (s * normPdf(d1) * sq) / 100;
  const decay = (-s * normPdf(d1) * sigma) / (2 * sq);
  if (type === 'call') {
    return {
      price: s * normCdf(d1) - disc * normCdf(d2),
      delta: normCdf(d1),
      gamma,
      theta: (decay - r * disc * normCdf(d2)) / 365,
      vega,
      probItm: normCdf(d2),
    };
  }
  return {
    price: disc * normCdf(-d2) - s * normCdf(-d1),
    delta: normCdf(d1) - 1,
    gamma,
    theta: (decay + r * disc * normCdf(-d2)) / 365,
    vega,
    probItm: normCdf(-d2),
  };
}

/** The volatility at which the model prices the option at `premium`, by bisection; null when no volatility in [0.1%, 500%] does. */
function impliedVolatility(type: 'call' | 'put', premium: number, s: number, k: number, t: number, r: number): number | null {
  let lo = 0.001;
  let hi = 5;
  if (premium <= blackScholes(type, s, k, t, lo, r).price || premium >= blackScholes(type, s, k, t, hi, r).price) return null;
  for (let i = 0; i < 100 && hi - lo > 1e-7; i++) {
    const mid = (lo + hi) / 2;
    if (blackScholes(type, s, k, t, mid, r).price < premium) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

const sign = (leg: OptionLeg) => (leg.side === 'buy' ? 1 : -1);
const intrinsic = (leg: OptionLeg, s: number) => (leg.type === 'call' ? Math.max(0, s - leg.strike) : Math.max(0, leg.strike - s));
const EPS = 1e-9;

// ---------------------------------------------------------------------------------------------
// options_analysis_workflow
// ---------------------------------------------------------------------------------------------

export interface LegAnalysis {
  leg: number;
  side: 'buy' | 'sell';
  type: 'call' | 'put';
  strike: number;
  premium: number;
  quantity: number;
  /** Model price per share at the assumed volatility. */
  theoretical_price: number;
  /** Volatility implied by the premium; null when the premium is outside what the model can produce. */
  implied_volatility: number | null;
  probability_itm: number;
  /** Per share, for one long option. */
  delta: number;
  gamma: number;
  theta: number;
  vega: number;
}

export interface Position {
  /** Premium received minus paid, for all contracts: > 0 is a credit. */
  net_premium: number;
  cost_basis: 'credit' | 'debit' | 'even';
  /** Signed position Greeks for all contracts and shares per contract. */
  delta: number;
  gamma: number;
  theta: number;
  vega: number;
  /** Model value of the position now, minus what it cost (its P&L if repriced at once). */
  model_edge: number;
  bias: 'bullish' | 'bearish' | 'neutral';
}

export interface Payoff {
  /** Underlying prices where the P&L at expiry is zero, ascending. */
  breakevens: number[];
  /** Highest and lowest P&L at expiry, signed, for all contracts. */
  max_profit: number | 'unlimited';
  max_loss: number | 'unlimited';
  /** max_profit / -max_loss, when both are bounded and the strategy can both gain and lose. */
  reward_risk_ratio: number | null;
  /** Risk-neutral probability (lognormal) that the P&L at expiry is > 0. */
  probability_of_profit: number;
  /** P&L at expiry at the strikes, the breakevens and spot ±50%. */
  curve: { price: number; pnl: number }[];
}

export interface Scenario {
  /** Move of the underlying, percent. */
  move_pct: number;
  /** Shift of the volatility, in points. */
  vol_shift: number;
  price: number;
  /** P&L now (model reprice), and at expiry; null at expiry for a volatility shift. */
  pnl_now: number;
  pnl_at_expiry: number | null;
}

export interface VolatilityAnalysis {
  assumed: number;
  /** Mean of the legs' implied volatilities, null when none could be solved. */
  average_implied: number | null;
  /** Mean put implied volatility minus mean call implied volatility, when both exist. */
  put_call_skew: number | null;
  /** Options priced above (rich) or below (cheap) the assumed volatility, by 2 points or more. */
  pricing: 'rich' | 'cheap' | 'fair' | 'unknown';
  /** One standard deviation move of the underlying by expiry, and the 1σ and 2σ ranges. */
  expected_move: number;
  one_sigma_range: [number, number];
  two_sigma_range: [number, number];
}

export interface OptionsAnalysisResult {
  symbol: string;
  strategy: string | null;
  underlying_price: number;
  days_to_expiry: number;
  legs: LegAnalysis[];
  /** Null without legs, as are the payoff and the scenarios. */
  position: Position | null;
  payoff: Payoff | null;
  volatility: VolatilityAnalysis;
  scenarios: Scenario[];
  /** High: the loss is unlimited. Medium: the bounded maximum loss exceeds the maximum profit. Low: otherwise. */
  risk_level: 'high' | 'medium' | 'low' | 'none';
  metadata?: { model: string; risk_free_rate: number; contract_multiplier: number; implied_volatility: number; legs: number; digest: string };
}

/** The figures, computed in three phases the handlers call with progress in between. */
class StrategyAnalyser {
  private readonly t: number;
  private readonly m: number;

  constructor(readonly s: StrategySummary) {
    this.t = s.days_to_expiry / 365;
    this.m = s.contract_multiplier;
  }

  private size(leg: OptionLeg) {
    return sign(leg) * leg.quantity * this.m;
  }

  pnlAtExpiry(price: number): number {
    return this.s.legs.reduce((a, l) => a + this.size(l) * (intrinsic(l, price) - l.premium), 0);
  }

  pnlNow(price: number, sigma: number): number {
    const { t } = this;
    return this.s.legs.reduce((a, l) => a + this.size(l) * (blackScholes(l.type, price, l.strike, t, sigma, this.s.risk_free_rate).price - l.premium), 0);
  }

  /** Probability (risk-neutral, lognormal) that the underlying ends below `x`. */
  private below(x: number): number {
    if (x <= 0) return 0;
    if (x === Infinity) return 1;
    const { s, t } = this;
    const sigma = s.implied_volatility;
    return normCdf((Math.log(x / s.underlying_price) - (s.risk_free_rate - (sigma * sigma) / 2) * t) / (sigma * Math.sqrt(t)));
  }

  legs(): LegAnalysis[] {
    const { s, t } = this;
    return s.legs.map((l, i) => {
      const p = blackScholes(l.type, s.underlying_price, l.strike, t, s.implied_volatility, s.risk_free_rate);
      const iv = impliedVolatility(l.type, l.premium, s.underlying_price, l.strike, t, s.risk_free_rate);
      return {
        leg: i + 1,
        side: l.side,
        type: l.type,
        strike: l.strike,
        premium: l.premium,
        quantity: l.quantity,
        theoretical_price: round(p.price, 4),
        implied_volatility: iv === null ? null : round(iv, 4),
        probability_itm: round(p.probItm, 4),
        delta: round(p.delta, 4),
        gamma: round(p.gamma, 6),
        theta: round(p.theta, 4),
        vega: round(p.vega, 4),
      };
    });
  }

  position(): Position | null {
    const { s, t } = this;
    if (s.legs.length === 0) return null;
    let net = 0;
    const g = { delta: 0, gamma: 0, theta: 0, vega: 0 };
    for (const l of s.legs) {
      net -= this.size(l) * l.premium;
      const p = blackScholes(l.type, s.underlying_price, l.strike, t, s.implied_volatility, s.risk_free_rate);
      for (const k of ['delta', 'gamma', 'theta', 'vega'] as const) g[k] += this.size(l) * p[k];
    }
    // Directional when the delta is over 5% of the shares the contracts control.
    const shares = s.legs.reduce((a, l) => a + l.quantity * this.m, 0);
    const bias = g.delta > 0.05 * shares ? 'bullish' : g.delta < -0.05 * shares ? 'bearish' : 'neutral';
    return {
      net_premium: round(net),
      cost_basis: Math.abs(net) < EPS ? 'even' : net > 0 ? 'credit' : 'debit',
      delta: round(g.delta, 2),
      gamma: round(g.gamma, 4),
      theta: round(g.theta, 2),
      vega: round(g.vega, 2),
      model_edge: round(this.pnlNow(s.underlying_price, s.implied_volatility)),
      bias,
    };
  }

  volatility(legs: LegAnalysis[]): VolatilityAnalysis {
    const { s, t } = this;
    const sigma = s.implied_volatility;
    const mean = (xs: number[]) => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);
    const ivs = (type?: 'call' | 'put') =>
      legs.filter((l) => l.implied_volatility !== null && (type === undefined || l.type === type)).map((l) => l.implied_volatility!);
    const avg = mean(ivs());
    const puts = mean(ivs('put'));
    const calls = mean(ivs('call'));
    const move = s.underlying_price * sigma * Math.sqrt(t);
    const range = (n: number): [number, number] => [round(Math.max(0, s.underlying_price - n * move)), round(s.underlying_price + n * move)];
    return {
      assumed: sigma,
      average_implied: avg === null ? null : round(avg, 4),
      put_call_skew: puts === null || calls === null ? null : round(puts - calls, 4),
      pricing: avg === null ? 'unknown' : avg - sigma >= 0.02 ? 'rich' : sigma - avg >= 0.02 ? 'cheap' : 'fair',
      expected_move: round(move),
      one_sigma_range: range(1),
      two_sigma_range: range(2),
    };
  }

  payoff(): Payoff | null {
    const { s } = this;
    if (s.legs.length === 0) return null;
    const strikes = [...new Set(s.legs.map((l) => l.strike))].sort((a, b) => a - b);
    // The P&L at expiry is piecewise linear with kinks at the strikes; beyond the last one its
    // slope is that of the calls.
    const points = [0, ...strikes];
    const values = points.map((p) => this.pnlAtExpiry(p));
    const slope = s.legs.reduce((a, l) => a + (l.type === 'call' ? this.size(l) : 0), 0);
    const roots: number[] = [];
    for (let i = 0; i < points.length; i++) {
      const a = points[i]!;
      const pa = values[i]!;
      if (Math.abs(pa) < EPS && a > 0) roots.push(a);
      if (i + 1 < points.length) {
        const b = points[i + 1]!;
        const pb = values[i + 1]!;
        if (Math.abs(pa) >= EPS && Math.abs(pb) >= EPS && pa * pb < 0) roots.push(a + ((b - a) * -pa) / (pb - pa));
      }
    }
    const last = points[points.length - 1]!;
    const pLast = values[values.length - 1]!;
    if (slope !== 0 && Math.abs(pLast) >= EPS && pLast * slope < 0) roots.push(last - pLast / slope);
    const breakevens = [...new Set(roots.map((r) => round(r, 4)))].sort((a, b) => a - b);

    const hi = Math.max(...values);
    const lo = Math.min(...values);
    const maxProfit = slope > 0 ? 'unlimited' : round(hi);
    const maxLoss = slope < 0 ? 'unlimited' : round(lo);

    // Sum the probability of the intervals, between kinks and roots, where the P&L is positive.
    const cuts = [...new Set([0, ...strikes, ...roots])].sort((a, b) => a - b);
    let pop = 0;
    for (let i = 0; i < cuts.length; i++) {
      const a = cuts[i]!;
      const b = cuts[i + 1] ?? Infinity;
      const mid = b === Infinity ? a * 1.5 + 1 : (a + b) / 2;
      if (this.pnlAtExpiry(mid) > EPS) pop += this.below(b) - this.below(a);
    }

    const spot = s.underlying_price;
    const prices = [...new Set([...strikes, ...breakevens, ...[0.5, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.5].map((f) => round(spot * f))])].sort((a, b) => a - b);
    return {
      breakevens,
      max_profit: maxProfit,
      max_loss: maxLoss,
      reward_risk_ratio: typeof maxProfit === 'number' && typeof maxLoss === 'number' && maxProfit > 0 && maxLoss < 0 ? round(maxProfit / -maxLoss) : null,
      probability_of_profit: round(Math.min(1, Math.max(0, pop)), 4),
      curve: prices.map((price) => ({ price, pnl: round(this.pnlAtExpiry(price)) })),
    };
  }

  scenarios(): Scenario[] {
    const { s } = this;
    if (s.legs.length === 0) return [];
    const sigma = s.implied_volatility;
    const moves = [-20, -10, -5, 0, 5, 10, 20].map((move) => {
      const price = s.underlying_price * (1 + move / 100);
      return { move_pct: move, vol_shift: 0, price: round(price), pnl_now: round(this.pnlNow(price, sigma)), pnl_at_expiry: round(this.pnlAtExpiry(price)) };
    });
    const vols = [-10, 10].map((shift) => ({
      move_pct: 0,
      vol_shift: shift,
      price: s.underlying_price,
      pnl_now: round(this.pnlNow(s.underlying_price, Math.max(0.01, sigma + shift / 100))),
      pnl_at_expiry: null,
    }));
    return [...moves, ...vols];
  }

  static riskLevel(payoff: Payoff | null): OptionsAnalysisResult['risk_level'] {
    if (payoff === null) return 'none';
    if (payoff.max_loss === 'unlimited') return 'high';
    if (payoff.max_profit !== 'unlimited' && -payoff.max_loss > payoff.max_profit) return 'medium';
    return 'low';
  }
}

/** Phase 1 of an analysis: the per-leg figures, the position's Greeks and the volatility and market figures. */
function firstPhase(a: StrategyAnalyser) {
  const legs = a.legs();
  return { legs, position: a.position(), volatility: a.volatility(legs), payoff: a.payoff() };
}

export async function runOptionsAnalysis(ctx: HandlerContext, input: OptionsAnalysisInput): Promise<OptionsAnalysisResult> {
  const step = input.simulate_ms ?? 0;
  failIfAsked(ctx, input.fail_times);
  const s = input.strategy_summary;
  const a = new StrategyAnalyser(s);

  await ctx.progress(10, '[10%] Phase 1: Parallel analysis (Greeks, IV, Market)...');
  await delay(step, ctx.signal);
  const first = firstPhase(a);

  await ctx.progress(60, '[60%] Phase 2: Risk scenario analysis...');
  await delay(step, ctx.signal);
  const scenarios = a.scenarios();

  await ctx.progress(80, '[80%] Phase 3: Synthesizing final report...');
  await delay(step, ctx.signal);
  const result: OptionsAnalysisResult = {
    symbol: s.symbol,
    strategy: s.strategy ?? null,
    underlying_price: s.underlying_price,
    days_to_expiry: s.days_to_expiry,
    ...first,
    scenarios,
    risk_level: StrategyAnalyser.riskLevel(first.payoff),
  };
  if (input.include_metadata) {
    result.metadata = {
      model: 'black-scholes-merton, no dividends; lognormal probabilities',
      risk_free_rate: s.risk_free_rate,
      contract_multiplier: s.contract_multiplier,
      implied_volatility: s.implied_volatility,
      legs: s.legs.length,
      digest: hex(fnv1a(JSON.stringify(s))),
    };
  }
  ctx.log('info', 'options analysis finished', { symbol: s.symbol, legs: s.legs.length, risk_level: result.risk_level });
  await ctx.progress(100, '[100%] Options analysis complete');
  return result;
}

// ---------------------------------------------------------------------------------------------
// multi_agent_report
// ---------------------------------------------------------------------------------------------

export type ReportAgent = 'greeks_analyst' | 'volatility_analyst' | 'market_analyst' | 'risk_analyst' | 'synthesizer' | 'strategy_analyst';

export interface ReportSection {
  agent: ReportAgent;
  title: string;
  findings: string[];
}

export interface MultiAgentReportResult {
  mode: 'multi_agent' | 'single_agent';
  symbol: string;
  strategy: string | null;
  /** Multi-agent: greeks, volatility, market, risk analysts, then the synthesizer. Single-agent: one section. */
  sections: ReportSection[];
  /** The report's one-paragraph conclusion. */
  summary: string;
  /** The sections as markdown: what was streamed as `partial` chunks, joined. */
  markdown: string;
  /** The figures the report is written from. */
  figures: { position: Position | null; payoff: Payoff | null; volatility: VolatilityAnalysis; risk_level: OptionsAnalysisResult['risk_level'] };
  digest: string;
}

type Figures = ReturnType<typeof firstPhase>;

function greeksSection(s: StrategySummary, f: Figures): ReportSection {
  const p = f.position;
  const findings = p
    ? [
        `Position delta ${fmt(p.delta)} (${p.bias}): a 1.00 move in ${s.symbol} changes the position's value by about ${fmt(p.delta)}.`,
        `Gamma ${fmt(p.gamma, 4)}: the delta changes by about that much per 1.00 move.`,
        `Theta ${fmt(p.theta)} a day: time decay ${p.theta >= 0 ? 'earns' : 'costs'} the position about ${fmt(Math.abs(p.theta))} a day.`,
        `Vega ${fmt(p.vega)}: a one-point rise in volatility ${p.vega >= 0 ? 'adds' : 'takes'} about ${fmt(Math.abs(p.vega))}.`,
      ]
    : ['No legs given: there are no position Greeks to report.'];
  return { agent: 'greeks_analyst', title: 'Greeks', findings };
}

function volatilitySection(s: StrategySummary, f: Figures): ReportSection {
  const v = f.volatility;
  const findings = [
    `Assumed volatility ${pct(v.assumed)} over ${s.days_to_expiry} days: expected move ±${fmt(v.expected_move)} (1σ range ${fmt(v.one_sigma_range[0])}–${fmt(v.one_sigma_range[1])}).`,
  ];
  for (const l of f.legs) {
    findings.push(
      l.implied_volatility === null
        ? `Leg ${l.leg} (${l.side} ${l.type} ${fmt(l.strike)}): the premium ${fmt(l.premium)} is outside what the model can price.`
        : `Leg ${l.leg} (${l.side} ${l.type} ${fmt(l.strike)}): the premium ${fmt(l.premium)} implies ${pct(l.implied_volatility)} volatility.`,
    );
  }
  if (v.put_call_skew !== null) findings.push(`Put–call skew ${v.put_call_skew >= 0 ? '+' : ''}${pct(v.put_call_skew)}.`);
  if (v.average_implied !== null) findings.push(`The premiums are ${v.pricing} against the assumed volatility (average implied ${pct(v.average_implied)}).`);
  return { agent: 'volatility_analyst', title: 'Implied volatility', findings };
}

function marketSection(s: StrategySummary, f: Figures): ReportSection {
  const v = f.volatility;
  const findings = [
    `${s.symbol} trades at ${fmt(s.underlying_price)}; by expiry the 1σ range is ${fmt(v.one_sigma_range[0])}–${fmt(v.one_sigma_range[1])} and the 2σ range ${fmt(v.two_sigma_range[0])}–${fmt(v.two_sigma_range[1])}.`,
  ];
  if (f.payoff) {
    const be = f.payoff.breakevens;
    findings.push(
      be.length === 0
        ? 'The strategy has no breakeven price.'
        : `Breakeven${be.length > 1 ? 's' : ''} at ${be.map((b) => `${fmt(b)} (${b >= s.underlying_price ? '+' : ''}${fmt((b / s.underlying_price - 1) * 100, 1)}% from spot)`).join(', ')}.`,
      `Probability of profit at expiry: ${pct(f.payoff.probability_of_profit)}.`,
    );
  }
  if (f.position) findings.push(`Directional bias: ${f.position.bias}.`);
  return { agent: 'market_analyst', title: 'Market', findings };
}

function riskSection(f: Figures, scenarios: Scenario[], risk: OptionsAnalysisResult['risk_level']): ReportSection {
  const p = f.payoff;
  if (!p) return { agent: 'risk_analyst', title: 'Risk scenarios', findings: ['No legs given: nothing is at risk.'] };
  const moves = scenarios.filter((x) => x.vol_shift === 0);
  const worst = moves.reduce((a, b) => (b.pnl_at_expiry! < a.pnl_at_expiry! ? b : a));
  const best = moves.reduce((a, b) => (b.pnl_at_expiry! > a.pnl_at_expiry! ? b : a));
  const findings = [
    `Maximum profit ${money(p.max_profit)}, maximum loss ${money(p.max_loss)} at expiry${p.reward_risk_ratio === null ? '' : `; reward/risk ${fmt(p.reward_risk_ratio)}`}.`,
    `Worst of the ±20% moves: ${signed(worst.move_pct)}% gives ${fmt(worst.pnl_at_expiry!)} at expiry; best: ${signed(best.move_pct)}% gives ${fmt(best.pnl_at_expiry!)}.`,
  ];
  for (const x of scenarios.filter((y) => y.vol_shift !== 0)) findings.push(`Volatility ${signed(x.vol_shift)} points now: ${fmt(x.pnl_now)}.`);
  findings.push(`Risk level: ${risk}.`);
  return { agent: 'risk_analyst', title: 'Risk scenarios', findings };
}

function conclusion(s: StrategySummary, f: Figures, risk: OptionsAnalysisResult['risk_level']): string {
  const name = s.strategy ?? (s.legs.length === 0 ? 'No position' : `${s.legs.length}-leg strategy`);
  if (!f.position || !f.payoff) {
    return `${name} on ${s.symbol}: no legs, so only the market view applies — expected move ±${fmt(f.volatility.expected_move)} by expiry in ${s.days_to_expiry} days.`;
  }
  const p = f.position;
  const be = f.payoff.breakevens.length === 0 ? 'no breakeven' : `breakeven ${f.payoff.breakevens.map((b) => fmt(b)).join(' / ')}`;
  return (
    `${name} on ${s.symbol}: net ${p.cost_basis} ${fmt(Math.abs(p.net_premium))}, ${p.bias} bias, ` +
    `max profit ${money(f.payoff.max_profit)}, max loss ${money(f.payoff.max_loss)}, ${be}, ` +
    `probability of profit ${pct(f.payoff.probability_of_profit)}; ${p.theta >= 0 ? 'earns' : 'pays'} time decay, ${p.vega >= 0 ? 'long' : 'short'} volatility; risk ${risk}.`
  );
}

const markdownOf = (x: ReportSection) => `## ${x.title}\n${x.findings.map((l) => `- ${l}\n`).join('')}\n`;

export async function runMultiAgentReport(ctx: HandlerContext, input: MultiAgentReportInput): Promise<MultiAgentReportResult> {
  const step = input.simulate_ms ?? 0;
  failIfAsked(ctx, input.fail_times);
  const s = input.strategy_summary;
  const a = new StrategyAnalyser(s);
  const sections: ReportSection[] = [];
  let markdown = '';
  const emit = async (x: ReportSection) => {
    sections.push(x);
    const md = markdownOf(x);
    markdown += md;
    await stream(ctx, md, 3, step);
  };

  let summary: string;
  let scenarios: Scenario[];
  let f: Figures;
  if (input.use_multi_agent) {
    await ctx.progress(10, '[10%] Phase 1: Parallel analysis (Greeks, IV, Market)...');
    // The three analysts run at once: the phase takes one step, not three.
    f = firstPhase(a);
    const analyst = async (write: (s: StrategySummary, f: Figures) => ReportSection) => {
      await delay(step, ctx.signal);
      return write(s, f);
    };
    const first = await Promise.all([analyst(greeksSection), analyst(volatilitySection), analyst(marketSection)]);
    for (const x of first) await emit(x);

    await ctx.progress(60, '[60%] Phase 2: Risk scenario analysis...');
    await delay(step, ctx.signal);
    scenarios = a.scenarios();
    const risk = StrategyAnalyser.riskLevel(f.payoff);
    await emit(riskSection(f, scenarios, risk));

    await ctx.progress(80, '[80%] Phase 3: Synthesizing final report...');
    await delay(step, ctx.signal);
    summary = conclusion(s, f, risk);
    const headline = sections.filter((x) => x.agent !== 'volatility_analyst').map((x) => `${x.title}: ${x.findings[0]}`);
    await emit({ agent: 'synthesizer', title: 'Synthesis', findings: [summary, ...headline] });
    await ctx.progress(100, '[100%] Multi-agent report complete');
  } else {
    await ctx.progress(10, '[10%] Single-agent analysis (Greeks, IV, Market, Risk)...');
    await delay(step, ctx.signal);
    f = firstPhase(a);
    scenarios = a.scenarios();
    const risk = StrategyAnalyser.riskLevel(f.payoff);

    await ctx.progress(80, '[80%] Writing report...');
    await delay(step, ctx.signal);
    summary = conclusion(s, f, risk);
    const findings = [summary, greeksSection(s, f).findings[0]!, volatilitySection(s, f).findings[0]!, riskSection(f, scenarios, risk).findings[0]!];
    await emit({ agent: 'strategy_analyst', title: 'Strategy report', findings });
    await ctx.progress(100, '[100%] Single-agent report complete');
  }
  const mode = input.use_multi_agent ? 'multi_agent' : 'single_agent';
  ctx.log('info', 'report finished', { mode, symbol: s.symbol, sections: sections.length });
  return {
    mode,
    symbol: s.symbol,
    strategy: s.strategy ?? null,
    sections,
    summary,
    markdown,
    figures: { position: f.position, payoff: f.payoff, volatility: f.volatility, risk_level: StrategyAnalyser.riskLevel(f.payoff) },
    digest: hex(fnv1a(markdown)),
  };
}

// ---------------------------------------------------------------------------------------------
// stock_screening_workflow
// ---------------------------------------------------------------------------------------------

/** Stocks generated for a sector; more than the largest `limit`, so filters leave a choice. */
export const UNIVERSE_SIZE = 250;

export interface Candidate {
  rank: number;
  ticker: string;
  /** Composite, 0..100: 30% growth, 25% value, 25% momentum, 20% stability. */
  score: number;
  /** Percentile of each factor in the sector's universe, 0..100. */
  factors: { value: number; growth: number; momentum: number; stability: number };
  market_cap_b: number;
  /** Null for a loss-making company. */
  pe_ratio: number | null;
  revenue_growth_pct: number;
  momentum_3m_pct: number;
  volatility_pct: number;
  dividend_yield_pct: number;
}

export interface StockScreeningResult {
  sector: string;
  universe_size: number;
  /** Stocks passing the filters; the answer has min(limit, matched) candidates. */
  matched: number;
  filters: { min_market_cap_b: number | null; max_pe: number | null; min_score: number | null };
  /** By score, highest first (ties by ticker). */
  candidates: Candidate[];
  /** The ranking as text: what was streamed as `partial` chunks, joined. */
  report: string;
  digest: string;
}

type Stock = Omit<Candidate, 'rank' | 'score' | 'factors'>;

/** The sector's universe: the same sector (any case, trimmed) always gives the same stocks. */
export function sectorUniverse(sector: string): Stock[] {
  const rand = seeded(fnv1a(sector.normalize('NFC').trim().toLowerCase()));
  // The sector's own level of valuation, growth and volatility.
  const peBase = 12 + rand() * 20;
  const growthBase = -2 + rand() * 20;
  const volBase = 18 + rand() * 22;
  const seen = new Set<string>();
  const stocks: Stock[] = [];
  while (stocks.length < UNIVERSE_SIZE) {
    const len = rand() < 0.5 ? 3 : 4;
    let ticker = '';
    for (let i = 0; i < len; i++) ticker += String.fromCharCode(65 + Math.floor(rand() * 26));
    if (seen.has(ticker)) continue;
    seen.add(ticker);
    const loss = rand() < 0.08;
    const pe = rand();
    stocks.push({
      ticker,
      market_cap_b: round(0.3 * Math.exp(rand() * Math.log(2000 / 0.3))),
      pe_ratio: loss ? null : round(peBase * (0.4 + 1.6 * pe), 1),
      revenue_growth_pct: round(growthBase + (rand() - 0.5) * 40, 1),
      momentum_3m_pct: round((rand() - 0.45) * 60, 1),
      volatility_pct: round(volBase * (0.6 + 0.9 * rand()), 1),
      dividend_yield_pct: rand() < 0.4 ? 0 : round(rand() * 5),
    });
  }
  return stocks;
}

/** Percentile rank (0..100, ties averaged) of each value; null values rank 0. */
function percentiles(values: (number | null)[], higherIsBetter: boolean): number[] {
  const present = values.map((v, i) => ({ v, i })).filter((x): x is { v: number; i: number } => x.v !== null);
  present.sort((a, b) => (higherIsBetter ? a.v - b.v : b.v - a.v));
  const out = values.map(() => 0);
  for (let i = 0; i < present.length;) {
    let j = i;
    while (j + 1 < present.length && present[j + 1]!.v === present[i]!.v) j++;
    const rank = present.length === 1 ? 100 : (100 * (i + j)) / 2 / (present.length - 1);
    for (let k = i; k <= j; k++) out[present[k]!.i] = round(rank);
    i = j + 1;
  }
  return out;
}

export async function runStockScreening(ctx: HandlerContext, input: StockScreeningInput): Promise<StockScreeningResult> {
  const step = input.simulate_ms ?? 0;
  failIfAsked(ctx, input.fail_times);
  const sector = input.sector.normalize('NFC').trim();

  await ctx.progress(10, `[10%] Phase 1: Building the ${sector} universe...`);
  await delay(step, ctx.signal);
  const universe = sectorUniverse(sector);

  await ctx.progress(40, '[40%] Phase 2: Scoring candidates (value, growth, momentum, stability)...');
  await delay(step, ctx.signal);
  const value = percentiles(
    universe.map((x) => x.pe_ratio),
    false,
  );
  const growth = percentiles(
    universe.map((x) => x.revenue_growth_pct),
    true,
  );
  const momentum = percentiles(
    universe.map((x) => x.momentum_3m_pct),
    true,
  );
  const stability = percentiles(
    universe.map((x) => x.volatility_pct),
    false,
  );
  const scored = universe.map((x, i) => {
    const factors = { value: value[i]!, growth: growth[i]!, momentum: momentum[i]!, stability: stability[i]! };
    const score = round(0.3 * factors.growth + 0.25 * factors.value + 0.25 * factors.momentum + 0.2 * factors.stability);
    return { ...x, score, factors };
  });

  await ctx.progress(80, `[80%] Phase 3: Ranking and selecting the top ${input.limit}...`);
  await delay(step, ctx.signal);
  const passing = scored.filter(
    (x) =>
      (input.min_market_cap_b === undefined || x.market_cap_b >= input.min_market_cap_b) &&
      (input.max_pe === undefined || (x.pe_ratio !== null && x.pe_ratio <= input.max_pe)) &&
      (input.min_score === undefined || x.score >= input.min_score),
  );
  passing.sort((a, b) => b.score - a.score || (a.ticker < b.ticker ? -1 : a.ticker > b.ticker ? 1 : 0));
  const candidates: Candidate[] = passing.slice(0, input.limit).map((x, i) => ({
    rank: i + 1,
    ticker: x.ticker,
    score: x.score,
    factors: x.factors,
    market_cap_b: x.market_cap_b,
    pe_ratio: x.pe_ratio,
    revenue_growth_pct: x.revenue_growth_pct,
    momentum_3m_pct: x.momentum_3m_pct,
    volatility_pct: x.volatility_pct,
    dividend_yield_pct: x.dividend_yield_pct,
  }));

  const report =
    `${sector}: ${candidates.length} of ${passing.length} matching stocks (universe ${universe.length})\n` +
    candidates
      .map(
        (c) =>
          `${c.rank}. ${c.ticker} score ${fmt(c.score)} | cap ${fmt(c.market_cap_b)}B | P/E ${c.pe_ratio === null ? 'n/a' : fmt(c.pe_ratio, 1)} | growth ${fmt(c.revenue_growth_pct, 1)}%\n`,
      )
      .join('');
  await stream(ctx, report, 10, step);
  ctx.log('info', 'stock screening finished', { sector, matched: passing.length, candidates: candidates.length });
  await ctx.progress(100, '[100%] Stock screening complete');
  return {
    sector,
    universe_size: universe.length,
    matched: passing.length,
    filters: { min_market_cap_b: input.min_market_cap_b ?? null, max_pe: input.max_pe ?? null, min_score: input.min_score ?? null },
    candidates,
    report,
    digest: hex(fnv1a(report)),
  };
}

// ---------------------------------------------------------------------------------------------
// The task types
// ---------------------------------------------------------------------------------------------

export const multiAgentReportTaskType = defineTaskType({
  name: 'multi_agent_report',
  input: multiAgentReportInput,
  handler: runMultiAgentReport,
  cost: (input) => (input.use_multi_agent ? MULTI_AGENT_COST : SINGLE_AGENT_COST),
  // Seed 000: with the quota short of a multi-agent report, write a single-agent one.
  downgrade: (input) => (input.use_multi_agent ? { ...input, use_multi_agent: false } : null),
});

export const optionsAnalysisTaskType = defineTaskType({
  name: 'options_analysis_workflow',
  input: optionsAnalysisInput,
  handler: runOptionsAnalysis,
  cost: OPTIONS_ANALYSIS_COST,
});

export const stockScreeningTaskType = defineTaskType({
  name: 'stock_screening_workflow',
  input: stockScreeningInput,
  handler: runStockScreening,
  cost: stockScreeningCost,
});

export const seedTaskTypes = [multiAgentReportTaskType, optionsAnalysisTaskType, stockScreeningTaskType] as const;
