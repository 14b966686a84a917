/** Starting and stopping sets of local services; shared by the CLI and the test setup. */
import { startKafka } from './kafka.ts';
import { SERVICE_NAMES, stopService, type ServiceHandle, type ServiceName, type ServiceStarter, type StartContext } from './lib.ts';
import { startRedisCluster } from './redis-cluster.ts';
import { startRedis } from './redis.ts';
import { startRocketmq } from './rocketmq.ts';

export const STARTERS: Record<ServiceName, ServiceStarter> = {
  redis: startRedis,
  'redis-cluster': startRedisCluster,
  kafka: startKafka,
  rocketmq: startRocketmq,
};

/** Started one after the other before the JVM services: they need no JVM and are ready in a second. */
const QUICK: readonly ServiceName[] = ['redis', 'redis-cluster'];

export function parseServiceNames(args: string[]): ServiceName[] {
  const bad = args.filter((a) => !(SERVICE_NAMES as readonly string[]).includes(a));
  if (bad.length > 0) throw new Error(`unknown service ${bad.join(', ')}: choose from ${SERVICE_NAMES.join(', ')}`);
  return args as ServiceName[];
}

/**
 * Starts `names`: Redis and the Redis Cluster first (they are quick), then the JVM services side by side. If one
 * fails, the ones already started are stopped and the error names the failing service.
 */
export async function startServices(names: ServiceName[], ctx: StartContext): Promise<ServiceHandle[]> {
  const started: ServiceHandle[] = [];
  const order = [...new Set(names)];
  try {
    for (const n of QUICK) if (order.includes(n)) started.push(await STARTERS[n](ctx));
    const jvms = order.filter((n) => !QUICK.includes(n));
    const results = await Promise.allSettled(jvms.map((n) => STARTERS[n](ctx)));
    const failures: string[] = [];
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') started.push(r.value);
      else failures.push(`${jvms[i]}: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`);
    });
    if (failures.length > 0) throw new Error(`could not start ${failures.join('\n')}`);
    return started;
  } catch (err) {
    await Promise.allSettled(started.map((h) => stopService(h)));
    throw err;
  }
}

export async function stopServices(handles: ServiceHandle[]): Promise<void> {
  await Promise.allSettled([...handles].reverse().map((h) => stopService(h)));
}

export function envOf(handles: ServiceHandle[]): Record<string, string> {
  return Object.assign({}, ...handles.map((h) => h.env)) as Record<string, string>;
}
