import { describe, expect, it } from 'vitest';
import { backlogProbe } from './backlog.ts';
import { MemoryBroker } from './broker/memory.ts';
import type { Broker } from './broker/port.ts';
import { silentLogger } from './logger.ts';
import { serveMetrics } from './metrics-server.ts';
import { Metrics, instrumentBroker, topicKinds } from './metrics.ts';

const metricValue = (m: Metrics, name: string, labels: Record<string, string> = {}) => m.value(name, labels);

describe('Metrics', () => {
  it('keeps label values bounded: unknown types are other, error codes capped', () => {
    const m = new Metrics({ types: ['agent'], defaultMetrics: false });
    expect(m.type('agent')).toBe('agent');
    expect(m.type('made-up')).toBe('other');
    expect(m.code('worker_lost')).toBe('worker_lost');
    expect(m.code('Not A Code!')).toBe('other');
    for (let i = 0; i < 40; i++) m.code(`code_${i}`);
    expect(m.code('code_35')).toBe('other');
    expect(m.code('worker_lost')).toBe('worker_lost');
  });

  it('serves the default process metrics and its own, with the atq_ prefix', async () => {
    const m = new Metrics({ types: ['agent'] });
    m.submitted.inc({ type: 'agent', outcome: 'accepted' });
    const { body, contentType } = await m.scrape();
    expect(contentType).toMatch(/^text\/plain/);
    expect(body).toContain('atq_process_cpu_user_seconds_total');
    expect(body).toContain('atq_nodejs_eventloop_lag_seconds');
    expect(body).toContain('atq_tasks_submitted_total{type="agent",outcome="accepted"} 1');
    for (const name of body.match(/^# TYPE (\S+)/gm) ?? []) expect(name.slice(7)).toMatch(/^atq_/);
  });

  it('sums running tasks and free slots over the tracked workers', async () => {
    const m = new Metrics({ defaultMetrics: false });
    const stop = m.trackSlots({ running: () => 3, free: () => 1 });
    m.trackSlots({ running: () => 1, free: () => 3 });
    expect(await metricValue(m, 'atq_tasks_running')).toBe(4);
    expect(await metricValue(m, 'atq_worker_free_slots')).toBe(4);
    stop();
    expect(await metricValue(m, 'atq_tasks_running')).toBe(1);
  });

  it('times publishes by topic kind and leaves the rest of the broker alone', async () => {
    const m = new Metrics({ defaultMetrics: false });
    const inner = new MemoryBroker();
    const broker = instrumentBroker(inner, m, topicKinds(['req', 'req-high', 'req-low'], 'res', inner.deadLetterTopic('g')));
    const got: string[] = [];
    await broker.subscribe('req', 'g', (d) => (got.push(d.key), Promise.resolve()));
    await broker.publish('req', { key: 'k1', body: '{}' });
    await broker.publish('res', { key: 'k2', body: '{}' });
    await broker.publish('g.DLQ', { key: 'k3', body: '{}' });
    expect(broker.kind).toBe('memory');
    expect(broker.deadLetterTopic('x')).toBe('x.DLQ');
    expect(got).toEqual(['k1']);
    const h = await m.publishSeconds.get();
    const count = (kind: string) => h.values.find((v) => v.metricName === 'atq_broker_publish_duration_seconds_count' && v.labels.kind === kind)?.value;
    expect([count('request'), count('result'), count('dead_letter')]).toEqual([1, 1, 1]);
    await inner.close();
    await expect(broker.publish('req', { key: 'k4', body: '{}' })).rejects.toThrow();
    expect(h.values.length).toBeGreaterThan(0);
    const after = await m.publishSeconds.get();
    expect(after.values.find((v) => v.metricName === 'atq_broker_publish_duration_seconds_count' && v.labels.outcome === 'error')?.value).toBe(1);
  });

  it('reads the backlog per priority at scrape time, cached, null where the broker cannot tell or is too slow', async () => {
    const broker = new MemoryBroker();
    await broker.publish('req', { key: 'a', body: '{}' });
    await broker.publish('req', { key: 'b', body: '{}' });
    await broker.publish('req-high', { key: 'c', body: '{}' });
    let asked = 0;
    const counting: Broker = Object.assign(Object.create(broker) as Broker, {
      backlog: (t: string, g: string) => (asked++, t === 'req-low' ? new Promise<number>(() => undefined) : broker.backlog(t, g)),
    });
    const probe = backlogProbe(counting, { topic: 'req', group: 'g', timeoutMs: 50, cacheMs: 10_000 });
    const m = new Metrics({ defaultMetrics: false });
    m.trackBacklog(probe);
    expect(await metricValue(m, 'atq_backlog_messages', { priority: 'normal' })).toBe(2);
    expect(await metricValue(m, 'atq_backlog_messages', { priority: 'high' })).toBe(1);
    expect(await metricValue(m, 'atq_backlog_messages', { priority: 'low' })).toBeUndefined();
    expect(asked).toBe(3); // one round for the three scrapes: cached
    expect(await probe()).toEqual({ high: 1, normal: 2, low: null });
    // A broker without backlog (RocketMQ's answers null the same way): every priority null.
    const none = backlogProbe({ ...broker, backlog: undefined } as unknown as Broker, { topic: 'req', group: 'g' });
    expect(await none()).toEqual({ high: null, normal: null, low: null });
    await broker.close();
  });

  it("serves a worker's registry on its own port at /metrics only", async () => {
    const m = new Metrics({ defaultMetrics: false });
    m.retries.inc({ type: 'agent' });
    const server = await serveMetrics(m, 0, silentLogger, '127.0.0.1');
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(await res.text()).toContain('atq_task_retries_total{type="agent"} 1');
      expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
