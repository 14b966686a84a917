import { describe, expect, it, vi } from 'vitest';
import type { z } from 'zod';
import { costOf, type HandlerContext } from '../common/registry.ts';
import {
  multiAgentReportInput,
  multiAgentReportTaskType,
  optionsAnalysisInput,
  optionsAnalysisTaskType,
  runMultiAgentReport,
  runOptionsAnalysis,
  runStockScreening,
  sectorUniverse,
  stockScreeningInput,
  stockScreeningTaskType,
  UNIVERSE_SIZE,
} from './seed-types.ts';
import { defaultRegistry } from './task-types.ts';

function ctx(attempt = 1, signal = new AbortController().signal) {
  const progress: { percent: number; message: string | undefined }[] = [];
  const chunks: string[] = [];
  const c: HandlerContext = {
    taskId: 't',
    tenant: 'default',
    attempt,
    userId: null,
    signal,
    progress: (percent, message) => Promise.resolve(void progress.push({ percent, message })),
    log: () => undefined,
    partial: (chunk) => Promise.resolve(void chunks.push(chunk)),
    needs: {},
    spawn: () => Promise.reject(new Error('ctx.spawn is not available here')),
  };
  return { c, progress, chunks };
}

const bullCallSpread = {
  symbol: 'AAPL',
  strategy: 'bull call spread',
  underlying_price: 100,
  days_to_expiry: 30,
  implied_volatility: 0.3,
  legs: [
    { side: 'buy', type: 'call', strike: 100, premium: 3.5 },
    { side: 'sell', type: 'call', strike: 110, premium: 1 },
  ],
};
const ironCondor = {
  symbol: 'SPY',
  strategy: 'iron condor',
  underlying_price: 500,
  days_to_expiry: 45,
  implied_volatility: 0.18,
  legs: [
    { side: 'sell', type: 'put', strike: 480, premium: 5 },
    { side: 'buy', type: 'put', strike: 470, premium: 3 },
    { side: 'sell', type: 'call', strike: 520, premium: 4.5 },
    { side: 'buy', type: 'call', strike: 530, premium: 2.5 },
  ],
};
const nakedCall = { symbol: 'TSLA', underlying_price: 200, legs: [{ side: 'sell', type: 'call', strike: 220, premium: 6, quantity: 2 }] };

const report = (input: unknown) => multiAgentReportInput.parse(input);
const options = (input: unknown) => optionsAnalysisInput.parse(input);
const screening = (input: unknown) => stockScreeningInput.parse(input);

/** The issues of a rejected input, as `path: message`. */
function issues(schema: z.ZodType, input: unknown): string[] {
  const r = schema.safeParse(input);
  expect(r.success).toBe(false);
  return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.code === 'unrecognized_keys' ? `unknown ${i.keys.join(', ')}` : i.message}`);
}

describe('quota costs (seed 000)', () => {
  it('multi_agent_report: 5 units with use_multi_agent, 1 without', () => {
    expect(costOf(multiAgentReportTaskType, report({ strategy_summary: bullCallSpread, use_multi_agent: true }))).toBe(5);
    expect(costOf(multiAgentReportTaskType, report({ strategy_summary: bullCallSpread, use_multi_agent: false }))).toBe(1);
    // Not asking for the multi-agent mode gets the single-agent one.
    expect(costOf(multiAgentReportTaskType, report({ strategy_summary: bullCallSpread }))).toBe(1);
  });

  it('options_analysis_workflow: 5 units, whatever the input', () => {
    expect(costOf(optionsAnalysisTaskType, options({ strategy_summary: bullCallSpread }))).toBe(5);
    expect(costOf(optionsAnalysisTaskType, options({ strategy_summary: { symbol: 'X', underlying_price: 1 }, include_metadata: true }))).toBe(5);
    expect('downgrade' in optionsAnalysisTaskType).toBe(false);
  });

  it('stock_screening_workflow: min(5, 2 + (limit * 2) // 10)', () => {
    const cost = (limit: number) => costOf(stockScreeningTaskType, screening({ sector: 'Technology', limit }));
    expect([1, 10, 15, 20, 100].map(cost)).toEqual([2, 4, 5, 5, 5]);
    // The integer division's steps: 2*limit reaches 10 at limit 5, 20 at 10, 30 at 15.
    expect([4, 5, 9, 14].map(cost)).toEqual([2, 3, 3, 4]);
    expect('downgrade' in stockScreeningTaskType).toBe(false);
  });

  it('a multi-agent report downgrades to a single-agent one, which has no cheaper form', () => {
    const full = report({ strategy_summary: ironCondor, use_multi_agent: true, simulate_ms: 5 });
    const down = multiAgentReportTaskType.downgrade!(full);
    expect(down).toEqual({ ...full, use_multi_agent: false });
    expect(multiAgentReportInput.safeParse(down).success).toBe(true);
    expect(costOf(multiAgentReportTaskType, down!)).toBe(1);
    expect(multiAgentReportTaskType.downgrade!(down!)).toBeNull();
  });

  it('the default registry holds the three next to agent, whose cost stays the default', () => {
    const reg = defaultRegistry();
    expect(reg.names().slice(0, 4)).toEqual(['agent', 'multi_agent_report', 'options_analysis_workflow', 'stock_screening_workflow']);
    // Then seed 001's report steps (worker/report-workflow.ts).
    expect(reg.names().slice(4)).toEqual(['report_research', 'report_analyst', 'report_writer', 'report_coordinator']);
    expect(reg.templateNames()).toEqual(['seed_report']);
    expect(costOf(reg.get('agent')!, { content: 'x' })).toBe(1);
  });
});

describe('input schemas', () => {
  it('reject unknown keys at every level, naming them', () => {
    expect(issues(multiAgentReportInput, { strategy_summary: bullCallSpread, use_multi_agent: true, async_mode: true })).toEqual([': unknown async_mode']);
    expect(issues(optionsAnalysisInput, { strategy_summary: { ...bullCallSpread, expiry: '2026-01-01' } })).toEqual(['strategy_summary: unknown expiry']);
    expect(
      issues(optionsAnalysisInput, { strategy_summary: { ...bullCallSpread, legs: [{ side: 'buy', type: 'call', strike: 1, premium: 1, delta: 0.5 }] } }),
    ).toEqual(['strategy_summary.legs.0: unknown delta']);
    expect(issues(stockScreeningInput, { sector: 'Energy', limit: 5, market: 'US' })).toEqual([': unknown market']);
  });

  it('name the offending fields with clear messages', () => {
    expect(
      issues(multiAgentReportInput, {
        strategy_summary: { symbol: 'aapl', legs: [{ side: 'long', type: 'call', strike: -1 }] },
        use_multi_agent: 'yes',
      }),
    ).toEqual([
      'strategy_summary.symbol: must be an upper-case ticker such as AAPL or BRK.B (at most 12 characters)',
      'strategy_summary.underlying_price: is required',
      'strategy_summary.legs.0.side: must be "buy" or "sell"',
      'strategy_summary.legs.0.strike: must be greater than 0',
      'strategy_summary.legs.0.premium: is required',
      'use_multi_agent: must be true or false',
    ]);
    expect(issues(multiAgentReportInput, {})).toEqual(['strategy_summary: is required']);
    expect(issues(optionsAnalysisInput, { strategy_summary: 'AAPL call' })).toEqual([
      'strategy_summary: must be an object (the strategy: symbol, underlying_price, legs, ...)',
    ]);
    expect(issues(optionsAnalysisInput, { strategy_summary: { ...bullCallSpread, legs: {} } })).toEqual(['strategy_summary.legs: must be an array of legs']);
    expect(issues(stockScreeningInput, { sector: '  ' })).toEqual(['sector: must not be empty', 'limit: is required']);
  });

  it('take a limit of 1..100 only', () => {
    expect(issues(stockScreeningInput, { sector: 'Energy', limit: 0 })).toEqual(['limit: must be at least 1']);
    expect(issues(stockScreeningInput, { sector: 'Energy', limit: 101 })).toEqual(['limit: must be at most 100']);
    expect(issues(stockScreeningInput, { sector: 'Energy', limit: 2.5 })).toEqual(['limit: must be a whole number']);
    expect(issues(stockScreeningInput, { sector: 'Energy', limit: '10' })).toEqual(['limit: must be a whole number']);
  });

  it('fill in the defaults', () => {
    expect(report({ strategy_summary: { symbol: 'BRK.B', underlying_price: 400 } })).toEqual({
      strategy_summary: {
        symbol: 'BRK.B',
        underlying_price: 400,
        days_to_expiry: 30,
        implied_volatility: 0.3,
        risk_free_rate: 0,
        contract_multiplier: 100,
        legs: [],
      },
      use_multi_agent: false,
    });
    expect(options({ strategy_summary: bullCallSpread }).strategy_summary.legs[0]!.quantity).toBe(1);
  });
});

describe('options_analysis_workflow', () => {
  it('computes the payoff of a bull call spread: breakeven, max profit and loss, Greeks', async () => {
    const a = ctx();
    const r = await runOptionsAnalysis(a.c, options({ strategy_summary: bullCallSpread }));
    expect(r.position).toMatchObject({ net_premium: -250, cost_basis: 'debit', bias: 'bullish' });
    expect(r.payoff).toMatchObject({ breakevens: [102.5], max_profit: 750, max_loss: -250, reward_risk_ratio: 3 });
    expect(r.payoff!.curve).toContainEqual({ price: 102.5, pnl: 0 });
    // P(S_T > 102.5) for a lognormal with sigma 0.3 over 30 days: about 37%.
    expect(r.payoff!.probability_of_profit).toBeCloseTo(0.3707, 3);
    expect(r.risk_level).toBe('low');
    // An at-the-money call: delta about 0.52, positive gamma and vega, negative theta.
    expect(r.legs[0]!.delta).toBeCloseTo(0.5172, 3);
    expect(r.legs[0]!.gamma).toBeGreaterThan(0);
    expect(r.legs[0]!.theta).toBeLessThan(0);
    expect(r.position!.delta).toBeCloseTo(100 * (r.legs[0]!.delta - r.legs[1]!.delta), 0);
    expect(r.metadata).toBeUndefined();
    expect(a.progress).toEqual([
      { percent: 10, message: '[10%] Phase 1: Parallel analysis (Greeks, IV, Market)...' },
      { percent: 60, message: '[60%] Phase 2: Risk scenario analysis...' },
      { percent: 80, message: '[80%] Phase 3: Synthesizing final report...' },
      { percent: 100, message: '[100%] Options analysis complete' },
    ]);
  });

  it('finds both breakevens of an iron condor and an unlimited loss on a naked call', async () => {
    const condor = await runOptionsAnalysis(ctx().c, options({ strategy_summary: ironCondor }));
    expect(condor.payoff).toMatchObject({ breakevens: [476, 524], max_profit: 400, max_loss: -600 });
    expect(condor.position).toMatchObject({ net_premium: 400, cost_basis: 'credit', bias: 'neutral' });
    expect(condor.position!.theta).toBeGreaterThan(0);
    expect(condor.position!.vega).toBeLessThan(0);
    expect(condor.risk_level).toBe('medium');
    expect(condor.volatility.put_call_skew).toBeGreaterThan(0);

    const naked = await runOptionsAnalysis(ctx().c, options({ strategy_summary: nakedCall }));
    expect(naked.payoff).toMatchObject({ breakevens: [226], max_profit: 1200, max_loss: 'unlimited', reward_risk_ratio: null });
    expect(naked.risk_level).toBe('high');
    expect(naked.position!.bias).toBe('bearish');
  });

  it('solves a leg’s implied volatility from its premium', async () => {
    const first = await runOptionsAnalysis(
      ctx().c,
      options({ strategy_summary: { symbol: 'MSFT', underlying_price: 400, implied_volatility: 0.25, legs: [] } }),
    );
    expect(first).toMatchObject({ position: null, payoff: null, scenarios: [], risk_level: 'none' });
    expect(first.volatility.expected_move).toBeCloseTo(400 * 0.25 * Math.sqrt(30 / 365), 1);
    // Price a put at 25% volatility, then give that price as its premium.
    const probe = await runOptionsAnalysis(
      ctx().c,
      options({ strategy_summary: { ...nakedCall, legs: [{ side: 'buy', type: 'put', strike: 190, premium: 1 }] } }),
    );
    const fair = probe.legs[0]!.theoretical_price;
    const r = await runOptionsAnalysis(
      ctx().c,
      options({ strategy_summary: { ...nakedCall, legs: [{ side: 'buy', type: 'put', strike: 190, premium: fair }] } }),
    );
    expect(r.legs[0]!.implied_volatility).toBeCloseTo(0.3, 3);
    expect(r.volatility.pricing).toBe('fair');
    // A premium below what any volatility gives has none.
    const free = await runOptionsAnalysis(
      ctx().c,
      options({ strategy_summary: { ...nakedCall, legs: [{ side: 'buy', type: 'call', strike: 100, premium: 50 }] } }),
    );
    expect(free.legs[0]!.implied_volatility).toBeNull();
  });

  it('answers the same result for the same input, with metadata when asked', async () => {
    const input = options({ strategy_summary: ironCondor, include_metadata: true });
    const r1 = await runOptionsAnalysis(ctx().c, input);
    const r2 = await runOptionsAnalysis(ctx().c, options({ strategy_summary: ironCondor, include_metadata: true }));
    expect(r1).toEqual(r2);
    expect(r1.metadata).toMatchObject({ legs: 4, contract_multiplier: 100, digest: expect.stringMatching(/^[0-9a-f]{8}$/) as unknown });
    expect(r1.scenarios.map((s) => [s.move_pct, s.vol_shift])).toEqual([
      [-20, 0],
      [-10, 0],
      [-5, 0],
      [0, 0],
      [5, 0],
      [10, 0],
      [20, 0],
      [0, -10],
      [0, 10],
    ]);
  });
});

describe('multi_agent_report', () => {
  it('with use_multi_agent: four analysts then a synthesis, streamed section by section', async () => {
    const a = ctx();
    const r = await runMultiAgentReport(a.c, report({ strategy_summary: ironCondor, use_multi_agent: true }));
    expect(r.mode).toBe('multi_agent');
    expect(r.sections.map((s) => s.agent)).toEqual(['greeks_analyst', 'volatility_analyst', 'market_analyst', 'risk_analyst', 'synthesizer']);
    expect(r.sections.every((s) => s.findings.length > 0)).toBe(true);
    expect(r.summary).toContain('iron condor on SPY: net credit 400.00');
    expect(r.summary).toContain('breakeven 476.00 / 524.00');
    expect(r.sections[4]!.findings[0]).toBe(r.summary);
    expect(r.figures.payoff).toMatchObject({ breakevens: [476, 524] });
    expect(a.chunks.length).toBeGreaterThan(5);
    expect(a.chunks.join('')).toBe(r.markdown);
    expect(r.markdown).toMatch(/^## Greeks\n/);
    expect(a.progress.map((p) => p.message)).toEqual([
      '[10%] Phase 1: Parallel analysis (Greeks, IV, Market)...',
      '[60%] Phase 2: Risk scenario analysis...',
      '[80%] Phase 3: Synthesizing final report...',
      '[100%] Multi-agent report complete',
    ]);
    expect(a.progress.map((p) => p.percent)).toEqual([10, 60, 80, 100]);
  });

  it('without it (or downgraded): one section from one agent', async () => {
    const a = ctx();
    const full = report({ strategy_summary: ironCondor, use_multi_agent: true });
    const r = await runMultiAgentReport(a.c, multiAgentReportTaskType.downgrade!(full)!);
    expect(r.mode).toBe('single_agent');
    expect(r.sections.map((s) => s.agent)).toEqual(['strategy_analyst']);
    expect(r.summary).toContain('iron condor on SPY');
    expect(a.chunks.join('')).toBe(r.markdown);
    expect(a.progress.map((p) => p.percent)).toEqual([10, 80, 100]);
    expect(await runMultiAgentReport(ctx().c, report({ strategy_summary: ironCondor }))).toEqual(r);
  });

  it('is deterministic, and reports on a strategy without legs', async () => {
    const input = report({ strategy_summary: bullCallSpread, use_multi_agent: true });
    expect(await runMultiAgentReport(ctx().c, input)).toEqual(await runMultiAgentReport(ctx().c, input));
    const bare = await runMultiAgentReport(ctx().c, report({ strategy_summary: { symbol: 'NVDA', underlying_price: 120 }, use_multi_agent: true }));
    expect(bare.sections[0]!.findings).toEqual(['No legs given: there are no position Greeks to report.']);
    expect(bare.figures.risk_level).toBe('none');
  });
});

describe('stock_screening_workflow', () => {
  it('answers `limit` candidates of the sector, sorted by score, the same each time', async () => {
    const a = ctx();
    const r = await runStockScreening(a.c, screening({ sector: 'Technology', limit: 20 }));
    expect(r.candidates).toHaveLength(20);
    expect(r).toMatchObject({ sector: 'Technology', universe_size: UNIVERSE_SIZE, matched: UNIVERSE_SIZE });
    expect(r.candidates.map((c) => c.rank)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const scores = r.candidates.map((c) => c.score);
    expect(scores).toEqual([...scores].sort((x, y) => y - x));
    expect(new Set(r.candidates.map((c) => c.ticker)).size).toBe(20);
    for (const c of r.candidates) {
      expect(c.ticker).toMatch(/^[A-Z]{3,4}$/);
      expect(c.score).toBeCloseTo(0.3 * c.factors.growth + 0.25 * c.factors.value + 0.25 * c.factors.momentum + 0.2 * c.factors.stability, 1);
    }
    expect(a.chunks.join('')).toBe(r.report);
    expect(a.progress.map((p) => p.percent)).toEqual([10, 40, 80, 100]);
    expect(a.progress[3]!.message).toBe('[100%] Stock screening complete');

    expect(await runStockScreening(ctx().c, screening({ sector: ' technology ', limit: 20 }))).toMatchObject({ candidates: r.candidates });
    const top5 = await runStockScreening(ctx().c, screening({ sector: 'Technology', limit: 5 }));
    expect(top5.candidates).toEqual(r.candidates.slice(0, 5));
    const energy = await runStockScreening(ctx().c, screening({ sector: 'Energy', limit: 20 }));
    expect(energy.candidates.map((c) => c.ticker)).not.toEqual(r.candidates.map((c) => c.ticker));
  });

  it('applies the filters', async () => {
    const r = await runStockScreening(ctx().c, screening({ sector: 'Healthcare', limit: 100, max_pe: 15, min_market_cap_b: 10 }));
    const universe = sectorUniverse('Healthcare');
    const expected = universe.filter((s) => s.pe_ratio !== null && s.pe_ratio <= 15 && s.market_cap_b >= 10).length;
    expect(r.matched).toBe(expected);
    expect(r.candidates).toHaveLength(Math.min(100, expected));
    expect(r.candidates.every((c) => c.pe_ratio !== null && c.pe_ratio <= 15 && c.market_cap_b >= 10)).toBe(true);
    expect(r.filters).toEqual({ min_market_cap_b: 10, max_pe: 15, min_score: null });
    const none = await runStockScreening(ctx().c, screening({ sector: 'Healthcare', limit: 10, min_score: 100 }));
    expect(none.candidates.length).toBeLessThanOrEqual(1);
  });
});

describe('the seed types as jobs', () => {
  const cases = [
    [
      'multi_agent_report',
      (c: HandlerContext, extra: object) => runMultiAgentReport(c, report({ strategy_summary: ironCondor, use_multi_agent: true, ...extra })),
    ],
    ['options_analysis_workflow', (c: HandlerContext, extra: object) => runOptionsAnalysis(c, options({ strategy_summary: bullCallSpread, ...extra }))],
    ['stock_screening_workflow', (c: HandlerContext, extra: object) => runStockScreening(c, screening({ sector: 'Technology', limit: 10, ...extra }))],
  ] as const;

  it.each(cases)('%s stops when its signal aborts during a simulated step', async (_name, run) => {
    const ac = new AbortController();
    const a = ctx(1, ac.signal);
    const p = run(a.c, { simulate_ms: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    ac.abort(new Error('cancelled'));
    const started = Date.now();
    await expect(p).rejects.toThrow('cancelled');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(a.progress.map((x) => x.percent)).toEqual([10]);
  });

  it.each(cases)('%s fails the first attempts when asked to', async (_name, run) => {
    await expect(run(ctx(1).c, { fail_times: 1 })).rejects.toThrow('simulated failure on attempt 1 of 1');
    await expect(run(ctx(2).c, { fail_times: 1 })).resolves.toBeTruthy();
  });

  it('runs a multi-agent report’s three first analysts at once', async () => {
    vi.useFakeTimers();
    try {
      const a = ctx();
      const p = runMultiAgentReport(a.c, report({ strategy_summary: ironCondor, use_multi_agent: true, simulate_ms: 1000 }));
      // One step in, the three analysts have all finished and their sections stream out.
      await vi.advanceTimersByTimeAsync(1010);
      expect(a.chunks[0]).toMatch(/^## Greeks\n/);
      expect(a.progress.map((x) => x.percent)).toEqual([10]);
      await vi.runAllTimersAsync();
      expect((await p).sections).toHaveLength(5);
      expect(a.progress.map((x) => x.percent)).toEqual([10, 60, 80, 100]);
    } finally {
      vi.useRealTimers();
    }
  });
});
