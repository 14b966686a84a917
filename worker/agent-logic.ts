/**
 * The demo `agent` task type: real, deterministic work on `content` in a few steps with
 * progress and no network — the place where a team puts its own agent (an LLM call, a
 * multi-agent report). `simulate_ms` stretches each step to show how long jobs behave.
 */
import { z } from 'zod';
import { delay } from '../common/backoff.ts';
import { nonRetryable } from '../common/errors.ts';
import { defineTaskType, type HandlerContext } from '../common/registry.ts';

/** Strict: an unknown key is refused with a 400 naming it, never silently dropped. */
export const agentInput = z.strictObject({
  content: z.string().min(1, 'must not be empty').max(100_000, 'at most 100000 characters'),
  /** Milliseconds to spend on each of the 4 steps, to simulate a slow model. Default 0. */
  simulate_ms: z.number().int().min(0).max(600_000).optional(),
  /** Test hook: fail the first N attempts with a retryable error. */
  fail_times: z.number().int().min(0).max(100).optional(),
});
export type AgentInput = z.infer<typeof agentInput>;

export interface AgentResult {
  summary: string;
  sentiment: 'positive' | 'negative' | 'neutral';
  score: number;
  keywords: { word: string; count: number }[];
  stats: { characters: number; words: number; sentences: number };
  digest: string;
}

const POSITIVE = ['好', '喜欢', '降价', '优惠', '满意', '推荐', '棒', 'good', 'great', 'love', 'like', 'cheap', 'discount', 'excellent', 'happy'];
const NEGATIVE = ['差', '贵', '涨价', '失望', '坏', '投诉', 'bad', 'poor', 'hate', 'expensive', 'broken', 'slow', 'angry', 'refund'];
const STOP = new Set(['the', 'a', 'an', 'and', 'or', 'of', 'to', 'in', 'is', 'it', '了', '的', '是', '在', '和', '我', '也', '就']);

/** FNV-1a, hex: a stable digest of the content so results can be checked. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

export async function runAgent(ctx: HandlerContext, input: AgentInput): Promise<AgentResult> {
  const step = input.simulate_ms ?? 0;
  if (input.fail_times !== undefined && ctx.attempt <= input.fail_times) {
    throw new Error(`simulated failure on attempt ${ctx.attempt} of ${input.fail_times}`);
  }
  const text = input.content.normalize('NFC').trim();
  if (text.length === 0) throw nonRetryable('content is blank', 'invalid_input');

  await ctx.progress(10, 'segmenting text');
  await delay(step, ctx.signal);
  // Intl.Segmenter splits Chinese into words as well as space-separated languages.
  const words = [...new Intl.Segmenter(undefined, { granularity: 'word' }).segment(text)].filter((s) => s.isWordLike).map((s) => s.segment.toLowerCase());
  const sentences = [...new Intl.Segmenter(undefined, { granularity: 'sentence' }).segment(text)].length;

  await ctx.progress(35, 'scoring sentiment');
  await delay(step, ctx.signal);
  let score = 0;
  for (const w of POSITIVE) if (text.toLowerCase().includes(w)) score++;
  for (const w of NEGATIVE) if (text.toLowerCase().includes(w)) score--;
  const sentiment = score > 0 ? 'positive' : score < 0 ? 'negative' : 'neutral';

  await ctx.progress(60, 'extracting keywords');
  await delay(step, ctx.signal);
  const counts = new Map<string, number>();
  for (const w of words) if (!STOP.has(w)) counts.set(w, (counts.get(w) ?? 0) + 1);
  const keywords = [...counts]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, 5)
    .map(([word, count]) => ({ word, count }));

  await ctx.progress(85, 'writing summary');
  await delay(step, ctx.signal);
  const head = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  const summary = `${sentiment} message of ${words.length} words; key terms: ${keywords.map((k) => k.word).join(', ') || 'none'}. "${head}"`;
  // Stream the summary a few words at a time, as an LLM streams tokens.
  const pieces = summary.match(/\S+\s*/g) ?? [summary];
  for (let i = 0; i < pieces.length; i += 4) {
    await ctx.partial(pieces.slice(i, i + 4).join(''));
    await delay(Math.floor(step / 8), ctx.signal);
  }
  ctx.log('info', 'agent finished', { words: words.length, sentiment });

  return {
    summary,
    sentiment,
    score,
    keywords,
    stats: { characters: [...text].length, words: words.length, sentences },
    digest: fnv1a(text),
  };
}

export const agentTaskType = defineTaskType({ name: 'agent', input: agentInput, handler: runAgent });
