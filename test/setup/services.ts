/**
 * Global setup of the integration tests: real Redis, a 3-master Redis Cluster, Kafka and
 * RocketMQ for the whole run.
 *
 * TEST_INFRA picks where they come from:
 *  - `local` (default without Docker): the launchers of `npm run infra`, on free loopback ports;
 *  - `containers` (default when a Docker engine answers): testcontainers, but the Redis Cluster
 *    from the local launcher (it needs only redis-server and redis-cli);
 *  - `external`: endpoints already running, from REDIS_HOST/REDIS_PORT, REDIS_CLUSTER_URL
 *    (and optionally REDIS_CLUSTER_NODES), KAFKA_BROKERS, MQ_ENDPOINT and ROCKETMQ_NAMESRV.
 * If the services cannot be had, the run fails here with the reason: never a silent skip.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { CACHE_DIR, ensureDir, type ServiceHandle } from '../../infra/lib.ts';
import { envOf, startServices, stopServices } from '../../infra/services.ts';

export interface ServiceEnv {
  REDIS_HOST: string;
  REDIS_PORT: string;
  /** redis://host:port of one node of the Redis Cluster; the client discovers the others. */
  REDIS_CLUSTER_URL: string;
  /** host:port of every node, comma-separated (external mode: REDIS_CLUSTER_URL's node unless set). */
  REDIS_CLUSTER_NODES: string;
  KAFKA_BROKERS: string;
  MQ_ENDPOINT: string;
  ROCKETMQ_NAMESRV: string;
  [key: string]: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    services: ServiceEnv;
    infraMode: string;
    /** Process ids of the locally started services (local mode only), for outage tests. */
    servicePids: Record<string, number[]>;
  }
}

async function dockerAnswers(): Promise<boolean> {
  const sock = process.env.DOCKER_HOST?.startsWith('unix://') ? process.env.DOCKER_HOST.slice(7) : '/var/run/docker.sock';
  if (process.env.DOCKER_HOST && !process.env.DOCKER_HOST.startsWith('unix://')) return true;
  if (!existsSync(sock)) return false;
  return new Promise((resolve) => {
    const s = connect(sock, () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

function required(names: string[]): Record<string, string> {
  const missing = names.filter((n) => !process.env[n]);
  if (missing.length > 0) throw new Error(`TEST_INFRA=external needs ${missing.join(', ')} in the environment`);
  return Object.fromEntries(names.map((n) => [n, process.env[n] ?? '']));
}

/** `host:port` of a redis:// URL. */
function clusterNodeOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    throw new Error(`TEST_INFRA=external needs REDIS_CLUSTER_URL as redis://host:port, not ${url}`);
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const mode = process.env.TEST_INFRA ?? ((await dockerAnswers()) ? 'containers' : 'local');
  const log = (m: string) => process.stderr.write(`[services] ${m}\n`);
  project.provide('infraMode', mode);
  project.provide('servicePids', {});

  if (mode === 'external') {
    const env = required(['REDIS_HOST', 'REDIS_PORT', 'REDIS_CLUSTER_URL', 'KAFKA_BROKERS', 'MQ_ENDPOINT', 'ROCKETMQ_NAMESRV']);
    env.REDIS_CLUSTER_NODES = process.env.REDIS_CLUSTER_NODES || clusterNodeOf(env.REDIS_CLUSTER_URL ?? '');
    project.provide('services', env as ServiceEnv);
    return () => Promise.resolve();
  }
  if (mode === 'containers') {
    const { startContainers } = await import('./containers.ts');
    const { env, stop } = await startContainers(log);
    project.provide('services', env);
    return stop;
  }
  if (mode !== 'local') throw new Error(`TEST_INFRA must be local, containers or external, not ${mode}`);

  const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'test-runs')), 'run-'));
  const began = Date.now();
  let handles: ServiceHandle[];
  try {
    handles = await startServices(['redis', 'redis-cluster', 'kafka', 'rocketmq'], { runDir, log });
  } catch (err) {
    throw new Error(
      `integration tests need Redis, a Redis Cluster, Kafka and RocketMQ and could not start them locally ` +
        `(needs redis-server, redis-cli, java 17+ and mvn on PATH; or a Docker engine with TEST_INFRA=containers): ` +
        `${err instanceof Error ? err.message : String(err)}`,
    );
  }
  log(`${handles.map((h) => `${h.name} ${h.startSeconds.toFixed(1)} s`).join(', ')}; all ready in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  project.provide('services', envOf(handles) as ServiceEnv);
  project.provide('servicePids', Object.fromEntries(handles.map((h) => [h.name, h.pids])));
  return async () => {
    await stopServices(handles);
    rmSync(runDir, { recursive: true, force: true });
  };
}
