/**
 * Prometheus metrics (prom-client): one Registry per process, the default process metrics,
 * and the product's counters, histograms and gauges, all named `atq_…`. Every increment is
 * in process: nothing here costs a Redis command or a broker request, except the backlog
 * gauge, which asks the broker lazily at scrape time (timed out and cached, see backlog.ts).
 *
 * Label values stay bounded: task types only when the registry knows them (else `other`),
 * error codes capped at a fixed number of distinct values, routes as their pattern
 * (`/tasks/:id`), never a task id, a user id or a tenant name.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Broker, OutgoingMessage } from './broker/port.ts';
import { AppError, TooManyRequestsError, UnavailableError } from './errors.ts';
import { PRIORITIES, type Priority } from './task.ts';

export const METRICS_PREFIX = 'atq_';

export type SubmitOutcome = 'accepted' | 'replayed' | 'rate_limited' | 'quota_exceeded' | 'rejected' | 'unavailable';
/**
 * Where a task came from: POST /tasks (`http`), a step of a workflow started by POST /workflows
 * (`workflow`), a schedule's firing (`schedule`), a step of a workflow a handler's ctx.spawn
 * started (`spawn`), a rerun (POST /tasks/:id/retry, a dead-letter redrive: `rerun`).
 */
export type SubmitSource = 'http' | 'workflow' | 'schedule' | 'spawn' | 'rerun';
export type FinishOutcome = 'done' | 'failed' | 'cancelled';
export type TopicKind = 'request' | 'result' | 'dead_letter' | 'other';

/** Running tasks and free slots of one worker, read at scrape time. */
export interface SlotSource {
  running(): number;
  free(): number;
}

/** Backlog by priority (null: the broker cannot tell). */
export type BacklogReader = () => Promise<Record<Priority, number | null>>;

/** Seconds, for task run times: 10 ms to an hour. */
const LONG_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/** Seconds, for requests and publishes: 1 ms to 10 s. */
const SHORT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Distinct error codes kept as label values; any further one is `other`. */
const MAX_CODES = 32;

export interface MetricsOptions {
  /** Task type names that may be label values (the registry's); others count as `other`. */
  types?: readonly string[];
  /** Collect the default process metrics (CPU, memory, event loop, GC). Default true. */
  defaultMetrics?: boolean;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly types: Set<string>;
  private readonly codes = new Set<string>();
  private readonly slots = new Set<SlotSource>();
  private backlog: BacklogReader | undefined;

  readonly submitted: Counter<'type' | 'outcome' | 'source'>;
  readonly finished: Counter<'type' | 'outcome'>;
  readonly submitSeconds: Histogram<'outcome'>;
  readonly queueWaitSeconds: Histogram<'type'>;
  readonly runSeconds: Histogram<'type' | 'outcome'>;
  readonly retries: Counter<'type'>;
  readonly deadLetters: Counter<'code'>;
  readonly leaseLost: Counter<'type' | 'outcome'>;
  readonly publishSeconds: Histogram<'kind' | 'outcome'>;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpSeconds: Histogram<'method' | 'route'>;

  constructor(opts: MetricsOptions = {}) {
    this.types = new Set(opts.types ?? []);
    const registers = [this.registry];
    const p = METRICS_PREFIX;
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: p });
    this.submitted = new Counter({
      name: `${p}tasks_submitted_total`,
      help: 'Tasks submitted, by type, outcome (accepted, replayed, rate_limited, quota_exceeded, rejected, unavailable) and source (http, workflow, schedule, spawn, rerun)',
      labelNames: ['type', 'outcome', 'source'],
      registers,
    });
    this.finished = new Counter({
      name: `${p}tasks_finished_total`,
      help: 'Tasks that ended, by type and outcome (done, failed, cancelled), counted by the process that ended them',
      labelNames: ['type', 'outcome'],
      registers,
    });
    this.submitSeconds = new Histogram({
      name: `${p}submit_duration_seconds`,
      help: 'Time of a submission (POST /tasks, a schedule firing): admission and create in the store, then the publish of the request message',
      labelNames: ['outcome'],
      buckets: SHORT_BUCKETS,
      registers,
    });
    this.queueWaitSeconds = new Histogram({
      name: `${p}task_queue_wait_seconds`,
      help: 'From submission to the first claim (created_at to started_at of attempt 1), by type',
      labelNames: ['type'],
      buckets: LONG_BUCKETS,
      registers,
    });
    this.runSeconds = new Histogram({
      name: `${p}task_run_seconds`,
      help: 'Time of one attempt, claim to its end, by type and outcome (done, failed, retry, cancelled, lost: its lease expired and another worker took the task)',
      labelNames: ['type', 'outcome'],
      buckets: LONG_BUCKETS,
      registers,
    });
    this.retries = new Counter({ name: `${p}task_retries_total`, help: 'Failed attempts put back for a retry, by type', labelNames: ['type'], registers });
    this.deadLetters = new Counter({
      name: `${p}dead_letters_total`,
      help: 'Messages sent to the dead-letter topic, by code (worker_lost, not_json, schema_mismatch, unknown_task, the error code of a failed task, …)',
      labelNames: ['code'],
      registers,
    });
    this.leaseLost = new Counter({
      name: `${p}lease_lost_claims_total`,
      help: 'Claims of a task whose worker died (lease expired): rerun, or exhausted (no attempts left, failed worker_lost)',
      labelNames: ['type', 'outcome'],
      registers,
    });
    this.publishSeconds = new Histogram({
      name: `${p}broker_publish_duration_seconds`,
      help: 'Time until the broker acknowledged a publish, by topic kind (request, result, dead_letter) and outcome (ok, error)',
      labelNames: ['kind', 'outcome'],
      buckets: SHORT_BUCKETS,
      registers,
    });
    this.httpRequests = new Counter({
      name: `${p}http_requests_total`,
      help: 'HTTP requests by method, route pattern and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: `${p}http_request_duration_seconds`,
      help: 'HTTP request time until the answer starts, by method and route pattern',
      labelNames: ['method', 'route'],
      buckets: SHORT_BUCKETS,
      registers,
    });
    const slots = this.slots;
    new Gauge({
      name: `${p}tasks_running`,
      help: "Tasks this process's workers are running now",
      registers,
      collect() {
        this.set([...slots].reduce((n, s) => n + s.running(), 0));
      },
    });
    new Gauge({
      name: `${p}worker_free_slots`,
      help: "Free task slots of this process's workers",
      registers,
      collect() {
        this.set([...slots].reduce((n, s) => n + s.free(), 0));
      },
    });
    const backlogOf = () => this.backlog;
    new Gauge({
      name: `${p}backlog_messages`,
      help: 'Request messages not yet consumed, by priority (Kafka consumer lag; absent where the broker cannot tell)',
      labelNames: ['priority'],
      registers,
      async collect() {
        this.reset();
        const read = backlogOf();
        if (!read) return;
        const b = await read();
        for (const pr of PRIORITIES) {
          const v = b[pr];
          if (v !== null) this.set({ priority: pr }, v);
        }
      },
    });
  }

  /** A task type as a label value: the registry's names, else `other`. */
  type(name: string): string {
    return this.types.has(name) ? name : 'other';
  }

  /** An error code as a label value: the first MAX_CODES distinct well-formed codes, else `other`. */
  code(code: string): string {
    if (this.codes.has(code)) return code;
    if (!/^[a-z][a-z0-9_]{0,63}$/.test(code) || this.codes.size >= MAX_CODES) return 'other';
    this.codes.add(code);
    return code;
  }

  /** Counts a worker's slots in the running and free-slot gauges; answers a function that stops it. */
  trackSlots(source: SlotSource): () => void {
    this.slots.add(source);
    return () => this.slots.delete(source);
  }

  /** Where the backlog gauge reads from (the API process sets it). */
  trackBacklog(reader: BacklogReader): void {
    this.backlog = reader;
  }

  /**
   * The sum of a metric's series that have these labels (others may differ: `{type, outcome}`
   * sums the submissions of every source); undefined when none has them. For tests and logs.
   */
  async value(name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
    // A histogram's series: `<name>_count` and `<name>_sum` are read from `<name>`.
    const metric = this.registry.getSingleMetric(name) ?? this.registry.getSingleMetric(name.replace(/_(count|sum)$/, ''));
    if (!metric) throw new Error(`no metric ${name}`);
    const { values } = await metric.get();
    const matches = (v: (typeof values)[number] & { metricName?: string }) =>
      (v.metricName === undefined || v.metricName === name) &&
      Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want);
    const found = values.filter(matches);
    return found.length === 0 ? undefined : found.reduce((n, v) => n + v.value, 0);
  }

  /** The exposition text, and its content type. */
  async scrape(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}

/** The outcome of a submission that threw `err`: refused by the limits, the store or broker away (or a bug: a 500), else rejected. */
export function submitOutcomeOf(err: unknown): SubmitOutcome {
  if (err instanceof TooManyRequestsError) return err.code === 'quota_exceeded' ? 'quota_exceeded' : 'rate_limited';
  if (err instanceof UnavailableError || !(err instanceof AppError)) return 'unavailable';
  return 'rejected';
}

/**
 * Runs one task's submission (submitTask: POST /tasks, a schedule firing), counting it in
 * `atq_tasks_submitted_total` by type, outcome and source and timing it, and answers its result.
 */
export async function countSubmission<T extends { replayed: boolean }>(
  metrics: Metrics,
  type: string,
  source: SubmitSource,
  submit: () => Promise<T>,
): Promise<T> {
  const start = performance.now();
  let outcome: SubmitOutcome = 'unavailable';
  try {
    const r = await submit();
    outcome = r.replayed ? 'replayed' : 'accepted';
    return r;
  } catch (err) {
    outcome = submitOutcomeOf(err);
    throw err;
  } finally {
    metrics.submitted.inc({ type: metrics.type(type), outcome, source });
    metrics.submitSeconds.observe({ outcome }, secondsSince(start));
  }
}

/** Seconds since `startMs` (from Date.now() or performance.now()). */
export const secondsSince = (startMs: number): number => (performance.now() - startMs) / 1000;

/**
 * The broker with every publish timed in `metrics` by the kind of its topic. Everything else
 * is the broker itself.
 */
export function instrumentBroker(broker: Broker, metrics: Metrics, kindOf: (topic: string) => TopicKind): Broker {
  const publish = async (topic: string, message: OutgoingMessage): Promise<void> => {
    const start = performance.now();
    let outcome = 'error';
    try {
      await broker.publish(topic, message);
      outcome = 'ok';
    } finally {
      metrics.publishSeconds.observe({ kind: kindOf(topic), outcome }, secondsSince(start));
    }
  };
  return new Proxy(broker, {
    get(target, prop) {
      if (prop === 'publish') return publish;
      const v: unknown = Reflect.get(target, prop);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** Topic kinds of a deployment: its request topics, its result topic, and its group's dead letters. */
export function topicKinds(requestTopics: readonly string[], resultTopic: string, deadLetterTopic: string): (topic: string) => TopicKind {
  const request = new Set(requestTopics);
  return (t) => (request.has(t) ? 'request' : t === resultTopic ? 'result' : t === deadLetterTopic ? 'dead_letter' : 'other');
}
