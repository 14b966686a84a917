/**
 * One trace from the HTTP request through the broker to the worker and on to the result
 * message, on Kafka and on RocketMQ, across a retry. The API and the worker run as processes
 * that export OTLP/HTTP (JSON) to a receiver this test runs; the test sends its own
 * `traceparent`, so every span must carry its trace id and hang from the right parent.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import type { Broker, Delivery } from '../../common/broker/port.ts';
import { createResultBroker } from '../../client/results.ts';
import { killAll, startApi, startEntry } from '../support/processes.ts';
import { createRocketTopics, isolatedRun, services } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  service: string;
  attributes: Record<string, string | number | boolean | undefined>;
}

/** An OTLP/HTTP receiver: collects the spans every process sends to /v1/traces (JSON). */
async function otlpReceiver(): Promise<{ url: string; spans: Span[]; server: Server }> {
  const spans: Span[] = [];
  const value = (v: OtlpValue) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue);
  const attrs = (list: { key: string; value: OtlpValue }[] = []) => Object.fromEntries(list.map((a) => [a.key, value(a.value)]));
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      try {
        const doc = JSON.parse(body) as {
          resourceSpans?: {
            resource?: { attributes?: { key: string; value: OtlpValue }[] };
            scopeSpans?: { spans?: (Omit<Span, 'service' | 'attributes'> & { attributes?: { key: string; value: OtlpValue }[] })[] }[];
          }[];
        };
        for (const rs of doc.resourceSpans ?? []) {
          const service = String(attrs(rs.resource?.attributes)['service.name'] ?? '');
          for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ ...s, service, attributes: attrs(s.attributes) });
        }
      } catch {
        // not JSON: ignored
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  return { url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, spans, server };
}

describe.each(['kafka', 'rocketmq'] as const)('tracing on %s', (brokerName) => {
  let receiver: Awaited<ReturnType<typeof otlpReceiver>> | undefined;
  let results: Broker | undefined;
  afterAll(async () => {
    await results?.close({ graceMs: 0 });
    await killAll();
    receiver?.server.close();
  });

  it('one trace id from the HTTP request through the worker span to the result message, across a retry', { timeout: 120_000 }, async () => {
    receiver = await otlpReceiver();
    const { names, env } = isolatedRun('tracing', brokerName, {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      RETRY_BASE_MS: '100',
      RETRY_MAX_MS: '200',
      MAX_ATTEMPTS: '3',
    });
    if (brokerName === 'rocketmq') await createRocketTopics([...names.requests, names.result, names.deadLetter], [...names.groups, `${names.group}-results`]);
    const s = services();
    results =
      brokerName === 'kafka'
        ? await createResultBroker({ kind: 'kafka', brokers: s.KAFKA_BROKERS.split(',') })
        : await createResultBroker({ kind: 'rocketmq', endpoint: s.MQ_ENDPOINT });
    if (brokerName === 'kafka') await results.ensureTopics([...names.requests, names.result, names.deadLetter]);
    const got: Delivery[] = [];
    await results.subscribe(names.result, `${names.group}-results`, (d) => {
      got.push(d);
      return Promise.resolve();
    });
    const api = await startApi(env);
    const worker = startEntry('worker', 'run-worker.ts', env);
    await worker.waitForLine(/worker started/);

    const traceId = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const res = await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${callerSpan}-01` },
      body: JSON.stringify({ type: 'agent', input: { content: 'traced', fail_times: 1 } }),
    });
    expect(res.status).toBe(202);
    const { task_id: id } = (await res.json()) as { task_id: string };
    const done = (await (await fetch(`${api.url}/tasks/${id}?wait=60`)).json()) as { status: string; attempts: number };
    expect(done).toMatchObject({ status: 'done', attempts: 2 });

    await waitFor('the result message', () => got.some((d) => d.key === id), { timeoutMs: 30_000 });
    const ofTrace = () => receiver?.spans.filter((sp) => sp.traceId === traceId) ?? [];
    const named = (name: string) => ofTrace().filter((sp) => sp.name === name);
    await waitFor(
      'the spans of both attempts and the result publish',
      () => named('process agent').length === 2 && named(`publish ${names.result}`).length === 1,
      {
        timeoutMs: 30_000,
      },
    );

    // API: the server span continues the caller's; the submit (producer) span is its child.
    const [server] = named('POST /tasks');
    expect(server).toMatchObject({ parentSpanId: callerSpan, service: 'agent-task-queue-api', attributes: { 'http.response.status_code': 202 } });
    const [submit] = named('submit agent');
    expect(submit).toMatchObject({ parentSpanId: server?.spanId, attributes: { 'atq.task_id': id } });
    // Worker: both attempts (the retry came back through the relay) are children of the submit span.
    const attempts = named('process agent').sort((a, b) => Number(a.attributes['atq.attempt']) - Number(b.attributes['atq.attempt']));
    for (const a of attempts) expect(a).toMatchObject({ parentSpanId: submit?.spanId, service: 'agent-task-queue-worker', attributes: { 'atq.task_id': id } });
    expect(attempts.map((a) => [a.attributes['atq.attempt'], a.attributes['atq.outcome']])).toEqual([
      [1, 'retry'],
      [2, 'done'],
    ]);
    // Claim, store writes and the result publish nest under the attempt that made them.
    const kids = (span: Span | undefined) =>
      ofTrace()
        .filter((sp) => sp.parentSpanId === span?.spanId)
        .map((sp) => sp.name);
    expect(kids(attempts[0])).toEqual(expect.arrayContaining(['claim', 'store retry']));
    expect(kids(attempts[1])).toEqual(expect.arrayContaining(['claim', 'store done', `publish ${names.result}`]));
    // The result message carries the trace on, from the publish span.
    const [publish] = named(`publish ${names.result}`);
    const header = got.find((d) => d.key === id)?.headers.traceparent ?? '';
    expect(header).toBe(`00-${traceId}-${publish?.spanId}-01`);
  });
});
