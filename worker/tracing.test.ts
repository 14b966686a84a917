/**
 * One trace, in process: a call of the typed client (inside the caller's span) → the API's
 * server span → the submit's producer span → the worker's `process <type>` span → a span the
 * handler starts itself (an agent's LLM call), each the child of the one before. The
 * integration test (test/integration/tracing.test.ts) shows the same across real brokers.
 */
import { ROOT_CONTEXT, SpanKind, context, trace } from '@opentelemetry/api';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TaskClient, agentTools } from '../client/index.ts';
import { defineTaskType } from '../common/registry.ts';
import { defaultRegistry } from './task-types.ts';
import { embeddedStack } from '../test/support/embedded.ts';
import { installTracing, type TestTracing } from '../test/support/tracing.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** An agent step that makes a traced "LLM call" of its own. */
const traced = defineTaskType({
  name: 'traced',
  input: z.strictObject({ prompt: z.string() }),
  handler: (_ctx, input) =>
    trace.getTracer('my-agent').startActiveSpan('llm call', async (span) => {
      await new Promise((r) => setTimeout(r, 5));
      span.end();
      return { answer: input.prompt.toUpperCase() };
    }),
});

describe('tracing in process', () => {
  let tracing: TestTracing;
  beforeAll(() => {
    tracing = installTracing();
  });
  afterAll(async () => {
    await tracing.uninstall();
  });

  it('continues the caller’s trace from the typed client and agentTools through the API and the worker into the handler’s own spans', async () => {
    const { app } = await embeddedStack(cleanups, { registry: defaultRegistry().register(traced) });
    // The app runs in the root context, as across a network: only the headers the client sends carry the trace.
    const client = new TaskClient({
      baseUrl: 'http://localhost',
      fetch: (input, init) => context.with(ROOT_CONTEXT, () => Promise.resolve(app.request(input, init))),
    });
    const tools = agentTools(client);
    const caller = trace.getTracer('coordinator').startSpan('coordinate');
    const ids = await context.with(trace.setSpan(context.active(), caller), async () => {
      const a = (await client.submit({ type: 'traced', input: { prompt: 'one' } })).task_id;
      const b = await tools.submit_task('traced', { prompt: 'two' });
      expect(await tools.wait_for_tasks([a, b], 10)).toEqual({ [a]: 'done', [b]: 'done' });
      return [a, b];
    });
    caller.end();
    const spans = tracing.spans();
    const traceId = caller.spanContext().traceId;
    const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
    const parentOf = (s: { parentSpanContext?: { spanId: string } }) => byId.get(s.parentSpanContext?.spanId ?? '');
    for (const id of ids) {
      const process = spans.find((s) => s.name === 'process traced' && s.attributes['atq.task_id'] === id);
      expect(process, `a worker span for ${id}`).toBeDefined();
      if (!process) continue;
      expect(process.kind).toBe(SpanKind.CONSUMER);
      expect(process.spanContext().traceId).toBe(traceId);
      expect(process.attributes).toMatchObject({ 'atq.attempt': 1, 'atq.tenant': 'default', 'atq.outcome': 'done' });
      // process ← submit (producer) ← POST /tasks (server) ← the caller's span.
      const producer = parentOf(process);
      expect(producer).toMatchObject({ name: 'submit traced', kind: SpanKind.PRODUCER });
      const server = producer && parentOf(producer);
      expect(server).toMatchObject({ name: 'POST /tasks', kind: SpanKind.SERVER });
      expect(server?.parentSpanContext?.spanId).toBe(caller.spanContext().spanId);
      // The handler's own span nests under the attempt's.
      const llm = spans.filter((s) => s.name === 'llm call' && s.spanContext().traceId === traceId && parentOf(s) === process);
      expect(llm).toHaveLength(1);
    }
    // The polls of wait_for_tasks carry the trace too.
    expect(spans.filter((s) => s.name === 'GET /tasks/:id' && s.spanContext().traceId === traceId).length).toBeGreaterThan(0);
  });
});
