/**
 * The only module that reads the environment. `loadConfig()` parses it once with zod and
 * compiles it into a complete internal form; a bad value throws a ConfigError naming the
 * variable, which the entry points print before exiting 1.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { DEFAULT_KEY_PREFIX } from './keys.ts';

const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);
const str = (def: string) => z.string().trim().min(1).default(def);

const envSchema = z.object({
  BROKER: z.enum(['memory', 'kafka', 'rocketmq']).default('memory'),
  STORE: z.enum(['memory', 'redis']).optional(),

  REDIS_HOST: str('localhost'),
  REDIS_PORT: int(6379, 1, 65535),
  REDIS_PASSWORD: z.string().optional(),
  REDIS_DB: int(0, 0, 15),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\/\S+$/, 'redis://[user:password@]host:port[/db] or rediss:// for TLS')
    .refine((s) => URL.canParse(s), 'not a valid URL')
    .optional(),
  REDIS_USERNAME: z.string().optional(),
  REDIS_TLS: z.stringbool().default(false),
  REDIS_CLUSTER: z.stringbool().default(false),
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_{}-]*$/, 'letters, digits, ":", "_", "-", "{" and "}" only')
    .default(DEFAULT_KEY_PREFIX),

  MQ_ENDPOINT: str('127.0.0.1:8081'),
  MQ_TOPIC_REQUEST: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,127}$/, 'letters, digits, ".", "_" and "-", at most 127')
    .default('TopicTest'),
  MQ_TOPIC_RESULT: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,127}$/, 'letters, digits, ".", "_" and "-", at most 127')
    .default('TopicResult'),
  MQ_GROUP_AGENT: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,120}$/, 'letters, digits, ".", "_" and "-", at most 120')
    .default('GID_AGENT'),
  MQ_ACCESS_KEY: z.string().default(''),
  MQ_SECRET_KEY: z.string().default(''),

  KAFKA_BROKERS: z
    .string()
    .default('localhost:9092')
    .refine((s) => s.split(',').every((b) => /^[^\s:,]+:\d{1,5}$/.test(b.trim())), 'a comma-separated list of host:port'),
  KAFKA_CLIENT_ID: str('agent-task-queue'),
  KAFKA_PARTITIONS: int(8, 1, 1024),
  KAFKA_SESSION_TIMEOUT_MS: int(30_000, 1000, 300_000),
  MQ_INVISIBLE_MS: int(30_000, 10_000, 12 * 3_600_000),

  API_HOST: str('0.0.0.0'),
  API_PORT: int(8000, 0, 65535),
  API_BODY_LIMIT: int(1024 * 1024, 1024, 64 * 1024 * 1024),
  API_REQUEST_TIMEOUT_MS: int(5000, 100, 120_000),
  PUBLIC_URL: z.url().optional(),
  API_MAX_WAIT_SECONDS: int(60, 1, 600),
  EVENTS_RECHECK_MS: int(30_000, 100, 600_000),
  SSE_KEEPALIVE_MS: int(15_000, 1000, 300_000),

  // The MCP server (npm run mcp): the API its tools call, and the key they call it with.
  ATQ_API_URL: z
    .url()
    .regex(/^https?:\/\//, 'an http:// or https:// URL')
    .optional(),
  ATQ_API_KEY: z.string().trim().regex(/^\S+$/, 'the bare key (atq_…), without "Bearer " or spaces').optional(),

  WORKER_CONCURRENCY: int(4, 1, 1000),
  WORKER_ID: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,100}$/)
    .optional(),
  LEASE_MS: int(30_000, 1000, 3_600_000),
  SHUTDOWN_GRACE_MS: int(30_000, 0, 3_600_000),
  MAX_ATTEMPTS: int(3, 1, 100),
  RETRY_BASE_MS: int(1000, 10, 3_600_000),
  RETRY_MAX_MS: int(60_000, 10, 86_400_000),
  TASK_TIMEOUT_MS: int(15 * 60_000, 100, 86_400_000),
  RELAY_AFTER_MS: int(5000, 100, 3_600_000),
  RESULT_TTL_SECONDS: int(86_400, 1, 365 * 86_400),
  HISTORY_LIMIT: int(1000, 10, 100_000),
  OUTPUT_LIMIT_BYTES: int(1024 * 1024, 0, 64 * 1024 * 1024),
  IDEMPOTENCY_TTL_SECONDS: int(86_400, 1, 30 * 86_400),
  // Cron schedules (common/schedules).
  SCHEDULES_ENABLED: z.stringbool().default(true),
  SCHEDULER_TICK_MS: int(1000, 50, 60_000),
  SCHEDULE_CATCH_UP_SECONDS: int(3600, 0, 7 * 86_400),
  SCHEDULE_CATCH_UP_MAX: int(100, 1, 10_000),

  AUTH: z.enum(['keys', 'off']).optional(),
  RATE_LIMIT_SUBMITS_PER_S: int(0, 0, 1_000_000),
  RATE_LIMIT_READS_PER_S: int(0, 0, 1_000_000),
  QUOTA_UNITS: int(0, 0, 1_000_000_000),
  QUOTA_WINDOW_SECONDS: int(86_400, 1, 366 * 86_400),
  MAX_RUNNING_PER_TENANT: int(0, 0, 1_000_000),
  TENANT_THROTTLE_MS: int(1000, 50, 60_000),

  // Observability (issue 11). OTEL_* variables are read by the OpenTelemetry SDK itself.
  LOG_PAYLOADS: z.stringbool().default(false),
  METRICS_PORT: int(0, 0, 65535),
  // Read here only to decide whether to start the SDK (which reads every OTEL_* itself).
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.string().optional(),
  OTEL_SDK_DISABLED: z.stringbool().default(false),
  OTEL_SERVICE_NAME: z.string().optional(),
  WORKER_HEARTBEAT_MS: int(5000, 500, 600_000),

  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  LOG_FORMAT: z.enum(['pretty', 'json']).default('json'),
});

export type Env = z.input<typeof envSchema>;

/** The complete, validated settings of a process. Durations are milliseconds. */
export interface Config {
  broker: 'memory' | 'kafka' | 'rocketmq';
  store: 'memory' | 'redis';
  redis: {
    /** Overrides host, port, db (and the credentials it holds). */
    url: string | undefined;
    host: string;
    port: number;
    username: string | undefined;
    password: string | undefined;
    db: number;
    tls: boolean;
    /** The node (or URL) is a seed of a Redis Cluster. */
    cluster: boolean;
    keyPrefix: string;
  };
  topics: { request: string; result: string };
  group: string;
  rocketmq: { endpoint: string; accessKey: string; secretKey: string; invisibleMs: number };
  kafka: { brokers: string[]; clientId: string; partitions: number; sessionTimeoutMs: number };
  api: {
    host: string;
    port: number;
    bodyLimit: number;
    requestTimeoutMs: number;
    publicUrl: string | undefined;
    maxWaitSeconds: number;
    /** How long a quiet watch (SSE, ?wait) waits for news before reading the store anyway. */
    recheckMs: number;
    keepAliveMs: number;
  };
  worker: {
    id: string;
    concurrency: number;
    leaseMs: number;
    shutdownGraceMs: number;
    maxAttempts: number;
    retryBaseMs: number;
    retryMaxMs: number;
    taskTimeoutMs: number;
  };
  relayAfterMs: number;
  resultTtlSeconds: number;
  historyLimit: number;
  outputLimitBytes: number;
  idempotencyTtlSeconds: number;
  /** Cron schedules: whether this process runs a scheduler, how often it looks, and the catch-up policy's window and cap. */
  schedules: { enabled: boolean; tickMs: number; catchUpSeconds: number; catchUpMax: number };
  /** API keys, or none (every caller is the default tenant). */
  auth: 'keys' | 'off';
  /** Per-tenant defaults; a tenant's own limits (npm run keys -- tenant) win. 0 = none. */
  limits: { submitsPerSecond: number; readsPerSecond: number; quotaUnits: number; quotaWindowSeconds: number; maxRunning: number };
  /** First delay before a task over its tenant's running cap is offered again (doubling, to 16×). */
  throttleMs: number;
  log: { level: 'debug' | 'info' | 'warn' | 'error'; format: 'pretty' | 'json'; payloads: boolean };
  /** Start the OpenTelemetry SDK (an OTLP endpoint is set and the SDK is not disabled); `serviceName` overrides ours. */
  tracing: { enabled: boolean; serviceName: string | undefined };
  /** Port of a worker's /metrics (0 = none). */
  metricsPort: number;
  /** How often a worker renews its entry in the live-worker list. */
  heartbeatMs: number;
  /** The MCP server of `npm run mcp`: the API its tools call (default this host's API_PORT) and the key they send. */
  mcp: { apiUrl: string; apiKey: string | undefined };
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset" so that `KEY=` lines in a .env fall back to the default.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => ({
        path: i.path.join('.'),
        message: `${i.message} (got ${JSON.stringify(cleaned[String(i.path[0])] ?? null)})`,
      })),
    );
  }
  const e = parsed.data;
  if (e.REDIS_CLUSTER && !/\{[^}]+\}/.test(e.REDIS_KEY_PREFIX)) {
    throw new ConfigError([
      { path: 'REDIS_KEY_PREFIX', message: `needs a hash tag such as {atq}: on a Redis Cluster (got ${JSON.stringify(e.REDIS_KEY_PREFIX)})` },
    ]);
  }
  if (e.RETRY_MAX_MS < e.RETRY_BASE_MS) {
    throw new ConfigError([{ path: 'RETRY_MAX_MS', message: `must be >= RETRY_BASE_MS (${e.RETRY_BASE_MS})` }]);
  }
  return {
    broker: e.BROKER,
    // The embedded default keeps everything in process; any real broker implies Redis.
    store: e.STORE ?? (e.BROKER === 'memory' ? 'memory' : 'redis'),
    redis: {
      url: e.REDIS_URL,
      host: e.REDIS_HOST,
      port: e.REDIS_PORT,
      username: e.REDIS_USERNAME,
      password: e.REDIS_PASSWORD,
      db: e.REDIS_DB,
      tls: e.REDIS_TLS,
      cluster: e.REDIS_CLUSTER,
      keyPrefix: e.REDIS_KEY_PREFIX,
    },
    topics: { request: e.MQ_TOPIC_REQUEST, result: e.MQ_TOPIC_RESULT },
    group: e.MQ_GROUP_AGENT,
    rocketmq: { endpoint: e.MQ_ENDPOINT, accessKey: e.MQ_ACCESS_KEY, secretKey: e.MQ_SECRET_KEY, invisibleMs: e.MQ_INVISIBLE_MS },
    kafka: {
      brokers: e.KAFKA_BROKERS.split(',').map((b) => b.trim()),
      clientId: e.KAFKA_CLIENT_ID,
      partitions: e.KAFKA_PARTITIONS,
      sessionTimeoutMs: e.KAFKA_SESSION_TIMEOUT_MS,
    },
    api: {
      host: e.API_HOST,
      port: e.API_PORT,
      bodyLimit: e.API_BODY_LIMIT,
      requestTimeoutMs: e.API_REQUEST_TIMEOUT_MS,
      publicUrl: e.PUBLIC_URL,
      maxWaitSeconds: e.API_MAX_WAIT_SECONDS,
      recheckMs: e.EVENTS_RECHECK_MS,
      keepAliveMs: e.SSE_KEEPALIVE_MS,
    },
    worker: {
      id: e.WORKER_ID ?? `${hostname()}-${process.pid}`,
      concurrency: e.WORKER_CONCURRENCY,
      leaseMs: e.LEASE_MS,
      shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
      maxAttempts: e.MAX_ATTEMPTS,
      retryBaseMs: e.RETRY_BASE_MS,
      retryMaxMs: e.RETRY_MAX_MS,
      taskTimeoutMs: e.TASK_TIMEOUT_MS,
    },
    relayAfterMs: e.RELAY_AFTER_MS,
    resultTtlSeconds: e.RESULT_TTL_SECONDS,
    historyLimit: e.HISTORY_LIMIT,
    outputLimitBytes: e.OUTPUT_LIMIT_BYTES,
    idempotencyTtlSeconds: e.IDEMPOTENCY_TTL_SECONDS,
    schedules: {
      enabled: e.SCHEDULES_ENABLED,
      tickMs: e.SCHEDULER_TICK_MS,
      catchUpSeconds: e.SCHEDULE_CATCH_UP_SECONDS,
      catchUpMax: e.SCHEDULE_CATCH_UP_MAX,
    },
    // The embedded default is a laptop demo; anything on a real broker is a deployment.
    auth: e.AUTH ?? (e.BROKER === 'memory' ? 'off' : 'keys'),
    limits: {
      submitsPerSecond: e.RATE_LIMIT_SUBMITS_PER_S,
      readsPerSecond: e.RATE_LIMIT_READS_PER_S,
      quotaUnits: e.QUOTA_UNITS,
      quotaWindowSeconds: e.QUOTA_WINDOW_SECONDS,
      maxRunning: e.MAX_RUNNING_PER_TENANT,
    },
    throttleMs: e.TENANT_THROTTLE_MS,
    log: { level: e.LOG_LEVEL, format: e.LOG_FORMAT, payloads: e.LOG_PAYLOADS },
    tracing: {
      enabled: Boolean(e.OTEL_EXPORTER_OTLP_ENDPOINT || e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) && !e.OTEL_SDK_DISABLED,
      serviceName: e.OTEL_SERVICE_NAME,
    },
    metricsPort: e.METRICS_PORT,
    heartbeatMs: e.WORKER_HEARTBEAT_MS,
    mcp: { apiUrl: e.ATQ_API_URL ?? `http://127.0.0.1:${e.API_PORT}`, apiKey: e.ATQ_API_KEY },
  };
}
