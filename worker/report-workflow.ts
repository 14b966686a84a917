/**
 * Seed 001's staged report as a built-in workflow (`seed_report`): one researcher, then a
 * market, a financial and a risk analyst in parallel on the research, then a writer who waits
 * for all three (ctx.needs). The handlers do real, deterministic work on the topic (no
 * network), report progress in steps, and take `simulate_ms` to stretch each step.
 *
 * `report_coordinator` is seed 002's coordinating agent: it decides at run time how many
 * analysts a topic needs and starts them with ctx.spawn, with the writer as the step that
 * runs when they are all done.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { delay } from '../common/backoff.ts';
import { defineTaskType, type HandlerContext, type WorkflowTemplate } from '../common/registry.ts';

const simulate = z.number().int().min(0).max(600_000).optional();
const topic = z.string().min(1, 'must not be empty').max(500, 'at most 500 characters');

export const ANALYST_ROLES = ['market', 'financial', 'risk'] as const;
type Role = (typeof ANALYST_ROLES)[number];

/** A number in [0, 1) from the topic and a salt: the same topic always gives the same report. */
function unit(text: string, salt: string): number {
  return createHash('sha256').update(`${salt}\n${text}`).digest().readUInt32BE(0) / 2 ** 32;
}

/** Runs `steps` in order with progress after each, `ms` apart. */
async function staged<T>(ctx: HandlerContext, ms: number, steps: [string, () => T][]): Promise<T[]> {
  const out: T[] = [];
  for (const [i, [label, f]] of steps.entries()) {
    await delay(ms, ctx.signal);
    out.push(f());
    await ctx.progress(Math.round(((i + 1) / steps.length) * 100), label);
  }
  return out;
}

export interface Research {
  topic: string;
  facts: { id: string; claim: string; weight: number }[];
}

export const researchTaskType = defineTaskType({
  name: 'report_research',
  input: z.strictObject({ topic, simulate_ms: simulate }),
  cost: 1,
  async handler(ctx, input): Promise<Research> {
    const words = input.topic.split(/\s+/).filter(Boolean);
    const facts = await staged(
      ctx,
      input.simulate_ms ?? 0,
      ['demand', 'supply', 'pricing', 'regulation'].map((area, i) => [
        `researched ${area}`,
        () => ({ id: `f${i + 1}`, claim: `${area} of ${words.join(' ')}`, weight: Math.round(unit(input.topic, area) * 100) / 100 }),
      ]),
    );
    ctx.log('info', 'research gathered', { facts: facts.length });
    return { topic: input.topic, facts };
  },
});

export interface Analysis {
  role: Role;
  score: number;
  view: 'positive' | 'neutral' | 'negative';
  notes: string[];
}

export const analystTaskType = defineTaskType({
  name: 'report_analyst',
  input: z.strictObject({ role: z.enum(ANALYST_ROLES), topic: topic.optional(), simulate_ms: simulate }),
  cost: 1,
  async handler(ctx, input): Promise<Analysis> {
    const research = ctx.needs.research as Research | undefined;
    const subject = research?.topic ?? input.topic ?? '';
    const facts = research?.facts ?? [{ id: 'f0', claim: subject, weight: unit(subject, 'none') }];
    const notes = await staged(
      ctx,
      input.simulate_ms ?? 0,
      facts.map((f) => [`${input.role}: weighed ${f.id}`, () => `${f.claim}: ${Math.round(f.weight * unit(subject, input.role) * 100)}`]),
    );
    // The mean over the facts, each weighed by the research and by this analyst's own view: in [0, 1).
    const score = Math.round((facts.reduce((n, f) => n + (f.weight + unit(subject, `${input.role}/${f.id}`)) / 2, 0) / facts.length) * 100) / 100;
    const view = score > 0.6 ? 'positive' : score < 0.3 ? 'negative' : 'neutral';
    return { role: input.role, score, view, notes };
  },
});

export interface Report {
  topic: string;
  recommendation: 'buy' | 'hold' | 'sell';
  confidence: number;
  sections: { role: string; view: string; score: number }[];
  text: string;
}

export const writerTaskType = defineTaskType({
  name: 'report_writer',
  input: z.strictObject({ topic: topic.optional(), simulate_ms: simulate }),
  cost: 1,
  async handler(ctx, input): Promise<Report> {
    // Every analysis it needs, whatever their step ids (the template's or a spawn's).
    const analyses = Object.values(ctx.needs).filter((v): v is Analysis => typeof v === 'object' && v !== null && 'role' in v);
    if (analyses.length === 0) throw new Error('the writer needs at least one analysis');
    const subject = input.topic ?? 'the topic';
    const [sections] = await staged(ctx, input.simulate_ms ?? 0, [
      ['collected the analyses', () => analyses.map((a) => ({ role: a.role, view: a.view, score: a.score }))],
    ]);
    const mean = analyses.reduce((n, a) => n + a.score, 0) / analyses.length;
    const recommendation = mean > 0.55 ? 'buy' : mean < 0.35 ? 'sell' : 'hold';
    const text = `# ${subject}\n\n${(sections ?? []).map((s) => `- ${s.role}: ${s.view} (${s.score})`).join('\n')}\n\nRecommendation: ${recommendation}.\n`;
    for (const line of text.split('\n')) if (line) await ctx.partial(`${line}\n`);
    await ctx.progress(100, 'report written');
    return { topic: subject, recommendation, confidence: Math.round(mean * 100) / 100, sections: sections ?? [], text };
  },
});

/** Seed 002's coordinator: as many analysts as the topic has parts (1-10), then the writer, all spawned. */
export const coordinatorTaskType = defineTaskType({
  name: 'report_coordinator',
  input: z.strictObject({ topic, parts: z.number().int().min(1).max(10).optional(), simulate_ms: simulate }),
  cost: 1,
  async handler(ctx, input) {
    const parts = input.parts ?? Math.min(10, Math.max(1, input.topic.split(/[,;]/).length));
    await ctx.progress(10, `planning ${parts} analyses`);
    const children = Array.from({ length: parts }, (_, i) => ({
      id: `analyst-${i + 1}`,
      type: analystTaskType.name,
      input: { role: ANALYST_ROLES[i % ANALYST_ROLES.length] as Role, topic: input.topic, ...(input.simulate_ms ? { simulate_ms: input.simulate_ms } : {}) },
    }));
    const spawned = await ctx.spawn(children, {
      name: `report on ${input.topic}`.slice(0, 200),
      then: { id: 'writer', type: writerTaskType.name, input: { topic: input.topic, ...(input.simulate_ms ? { simulate_ms: input.simulate_ms } : {}) } },
    });
    await ctx.progress(100, `started workflow ${spawned.workflowId}`);
    return { workflow_id: spawned.workflowId, steps: spawned.steps };
  },
});

export const seedReportTemplate: WorkflowTemplate<{ topic: string; simulate_ms?: number | undefined }> = {
  name: 'seed_report',
  description: "Seed 001's report: research → market, financial and risk analysts in parallel → writer.",
  input: z.strictObject({ topic: topic.default('new energy vehicles'), simulate_ms: simulate }),
  steps: ({ topic: t, simulate_ms }) => {
    const sim = simulate_ms === undefined ? {} : { simulate_ms };
    return [
      { id: 'research', type: researchTaskType.name, input: { topic: t, ...sim } },
      ...ANALYST_ROLES.map((role) => ({ id: role, type: analystTaskType.name, input: { role, ...sim }, needs: ['research'] })),
      { id: 'writer', type: writerTaskType.name, input: { topic: t, ...sim }, needs: [...ANALYST_ROLES] },
    ];
  },
};
