import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';
import { ConfigError } from './errors.ts';

describe('loadConfig', () => {
  it('runs embedded with no configuration at all', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ broker: 'memory', store: 'memory', topics: { request: 'TopicTest', result: 'TopicResult' }, group: 'GID_AGENT' });
    expect(c.api).toMatchObject({ port: 8000, bodyLimit: 1024 * 1024 });
    expect(c.worker.concurrency).toBeGreaterThan(0);
  });

  it('uses Redis for any real broker, and parses the seed variables', () => {
    const c = loadConfig({ BROKER: 'kafka', KAFKA_BROKERS: 'a:9092, b:9093', REDIS_HOST: 'r', REDIS_PORT: '6380', MQ_TOPIC_REQUEST: 'Req', API_PORT: '' });
    expect(c).toMatchObject({
      broker: 'kafka',
      store: 'redis',
      redis: { host: 'r', port: 6380 },
      kafka: { brokers: ['a:9092', 'b:9093'] },
      topics: { request: 'Req' },
    });
    expect(c.api.port).toBe(8000);
  });

  it('takes Redis as a URL (TLS, ACL user), or as a cluster seed with a hash-tagged prefix', () => {
    const c = loadConfig({ BROKER: 'kafka', REDIS_URL: 'rediss://app:s3cret@redis.example.com:6380/2', REDIS_CLUSTER: 'true' });
    expect(c.redis).toMatchObject({ url: 'rediss://app:s3cret@redis.example.com:6380/2', cluster: true, keyPrefix: '{atq}:' });
    expect(loadConfig({ REDIS_USERNAME: 'app', REDIS_TLS: 'true' }).redis).toMatchObject({ username: 'app', tls: true, cluster: false });
  });

  const bad: [Record<string, string>, string][] = [
    [{ BROKER: 'rabbit' }, 'BROKER'],
    [{ API_PORT: 'eighty' }, 'API_PORT'],
    [{ REDIS_PORT: '70000' }, 'REDIS_PORT'],
    [{ WORKER_CONCURRENCY: '0' }, 'WORKER_CONCURRENCY'],
    [{ KAFKA_BROKERS: 'no-port' }, 'KAFKA_BROKERS'],
    [{ MQ_TOPIC_REQUEST: 'bad topic!' }, 'MQ_TOPIC_REQUEST'],
    [{ RETRY_BASE_MS: '5000', RETRY_MAX_MS: '100' }, 'RETRY_MAX_MS'],
    [{ REDIS_URL: 'http://r:6379' }, 'REDIS_URL'],
    [{ REDIS_CLUSTER: 'yes please' }, 'REDIS_CLUSTER'],
    [{ REDIS_CLUSTER: 'true', REDIS_KEY_PREFIX: 'atq:' }, 'REDIS_KEY_PREFIX'],
  ];
  for (const [env, name] of bad) {
    it(`rejects a bad ${name} with a message naming it`, () => {
      expect(() => loadConfig(env)).toThrow(ConfigError);
      expect(() => loadConfig(env)).toThrow(name);
    });
  }

  it('defaults AUTH to off on the embedded default and to keys on a real broker; limits default to none', () => {
    expect(loadConfig({}).auth).toBe('off');
    expect(loadConfig({ BROKER: 'kafka' }).auth).toBe('keys');
    expect(loadConfig({ BROKER: 'rocketmq', AUTH: 'off' }).auth).toBe('off');
    expect(loadConfig({}).limits).toEqual({ submitsPerSecond: 0, readsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400, maxRunning: 0 });
    expect(loadConfig({ QUOTA_UNITS: '100', RATE_LIMIT_SUBMITS_PER_S: '5', MAX_RUNNING_PER_TENANT: '2' }).limits).toMatchObject({
      quotaUnits: 100,
      submitsPerSecond: 5,
      maxRunning: 2,
    });
    expect(() => loadConfig({ AUTH: 'yes' })).toThrow(/AUTH/);
    expect(() => loadConfig({ QUOTA_WINDOW_SECONDS: '0' })).toThrow(/QUOTA_WINDOW_SECONDS/);
  });

  it('logs JSON lines at info without payloads by default', () => {
    expect(loadConfig({}).log).toEqual({ level: 'info', format: 'json', payloads: false });
    expect(loadConfig({ LOG_FORMAT: 'pretty', LOG_LEVEL: 'warn', LOG_PAYLOADS: 'true' }).log).toEqual({ level: 'warn', format: 'pretty', payloads: true });
    expect(() => loadConfig({ LOG_FORMAT: 'text' })).toThrow(/LOG_FORMAT/);
  });
});
