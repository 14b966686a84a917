import { describe, expect, it } from 'vitest';
import type { HandlerContext } from '../common/registry.ts';
import { runAgent } from './agent-logic.ts';

function ctx(attempt = 1) {
  const progress: number[] = [];
  const chunks: string[] = [];
  const c: HandlerContext = {
    taskId: 't',
    tenant: 'default',
    attempt,
    userId: null,
    signal: new AbortController().signal,
    progress: (p) => Promise.resolve(void progress.push(p)),
    log: () => undefined,
    partial: (chunk) => Promise.resolve(void chunks.push(chunk)),
    needs: {},
    spawn: () => Promise.reject(new Error('ctx.spawn is not available here')),
  };
  return { c, progress, chunks };
}

describe('agent demo handler', () => {
  it("analyses the seed's content deterministically, reporting progress", async () => {
    const a = ctx();
    const r1 = await runAgent(a.c, { content: '机械键盘降价了' });
    const r2 = await runAgent(ctx().c, { content: '机械键盘降价了' });
    expect(r1).toEqual(r2);
    expect(r1.sentiment).toBe('positive');
    expect(r1.keywords.map((k) => k.word)).toContain('键盘');
    expect(a.progress).toEqual([10, 35, 60, 85]);
    // The summary streams out in pieces that add up to it.
    expect(a.chunks.length).toBeGreaterThan(1);
    expect(a.chunks.join('')).toBe(r1.summary);
  });

  it('fails the first attempts when asked to, for retry demos', async () => {
    await expect(runAgent(ctx(1).c, { content: 'x', fail_times: 1 })).rejects.toThrow('simulated failure');
    await expect(runAgent(ctx(2).c, { content: 'x', fail_times: 1 })).resolves.toMatchObject({ sentiment: 'neutral' });
  });

  it('stops when its signal aborts', async () => {
    const ac = new AbortController();
    const c = { ...ctx().c, signal: ac.signal };
    const p = runAgent(c, { content: 'slow', simulate_ms: 10_000 });
    ac.abort(new Error('cancelled'));
    await expect(p).rejects.toThrow('cancelled');
  });
});
