/**
 * A private 3-master Redis Cluster (no replicas) from the redis-server on PATH: three nodes on
 * free loopback ports, each with its own dir, joined by `redis-cli --cluster create`.
 */
import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sleep } from '../common/backoff.ts';
import { ensureDir, freePort, isAlive, spawnDetached, stopService, tail, waitForLogLine, type ServiceStarter } from './lib.ts';

const run = promisify(execFile);

const NODES = 3;
const CREATE_TIMEOUT_MS = 30_000;
const STATE_OK_TIMEOUT_MS = 20_000;

/** What `cmd --version` prints; throws `missing` when `cmd` cannot be run. */
function versionOf(cmd: string, missing: string): string {
  try {
    return execFileSync(cmd, ['--version'], { encoding: 'utf8' });
  } catch {
    throw new Error(missing);
  }
}

/** True when nothing listens on 127.0.0.1:`port`. */
function canListen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/**
 * A client port and a cluster bus port, both free and not in `taken` (which they join).
 * Redis 7 takes the bus port as `--cluster-port`; older ones always use port + 10000.
 */
async function nodePorts(taken: Set<number>, ownBusPort: boolean): Promise<{ port: number; busPort: number }> {
  for (let i = 0; i < 100; i++) {
    const port = await freePort();
    if (taken.has(port)) continue;
    const busPort = ownBusPort ? await freePort() : port + 10_000;
    if (busPort === port || taken.has(busPort) || busPort > 65_535 || !(await canListen(busPort))) continue;
    taken.add(port).add(busPort);
    return { port, busPort };
  }
  throw new Error('could not find free loopback ports for the Redis Cluster');
}

async function clusterInfo(port: number): Promise<string> {
  try {
    const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'cluster', 'info'], { timeout: 2_000 });
    return stdout;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

export const startRedisCluster: ServiceStarter = async (ctx) => {
  const server = versionOf(
    'redis-server',
    'redis-server is not on PATH: the Redis Cluster needs it, also with TEST_INFRA=containers (Debian: apt-get install redis-server)',
  );
  const serverMajor = Number(/v=(\d+)\./.exec(server)?.[1] ?? 0);
  versionOf(
    'redis-cli',
    'redis-cli is not on PATH: the Redis Cluster needs it to join its nodes (Debian: apt-get install redis-tools, installed with redis-server)',
  );
  const dir = ensureDir(join(ctx.runDir, 'redis-cluster'));
  const taken = new Set<number>();
  const nodes: { port: number; busPort: number; dir: string; logFile: string }[] = [];
  for (let i = 0; i < NODES; i++) {
    const { port, busPort } = await nodePorts(taken, serverMajor >= 7);
    const nodeDir = ensureDir(join(dir, String(port)));
    nodes.push({ port, busPort, dir: nodeDir, logFile: join(nodeDir, 'redis.log') });
  }
  const addresses = nodes.map((n) => `127.0.0.1:${n.port}`);
  const began = Date.now();
  const pids: number[] = [];
  try {
    for (const n of nodes) {
      const args = [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(n.dir, `nodes-${n.port}.conf`),
        '--cluster-node-timeout',
        '2000',
        ...(serverMajor >= 7 ? ['--cluster-port', String(n.busPort)] : []),
        '--port',
        String(n.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        n.dir,
        '--daemonize',
        'no',
      ];
      pids.push(spawnDetached('redis-server', args, { cwd: n.dir, logFile: n.logFile }));
    }
    await Promise.all(
      nodes.map((n, i) => waitForLogLine(n.logFile, 'Ready to accept connections', pids[i] ?? 0, 20_000, `redis-cluster node on port ${n.port}`)),
    );

    const createLog = join(dir, 'cluster-create.log');
    try {
      const { stdout, stderr } = await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], {
        timeout: CREATE_TIMEOUT_MS,
      });
      appendFileSync(createLog, stdout + stderr);
    } catch (err) {
      const e = err as Error & { stdout?: string; stderr?: string; killed?: boolean };
      appendFileSync(createLog, `${e.stdout ?? ''}${e.stderr ?? ''}`);
      const why = e.killed ? `did not finish within ${CREATE_TIMEOUT_MS} ms` : `failed: ${e.message}`;
      throw new Error(`redis-cli --cluster create ${addresses.join(' ')} ${why}; log ${createLog}:\n${tail(`${e.stdout ?? ''}${e.stderr ?? ''}`)}`);
    }

    // Every node must see all slots served (and every other node) before clients connect.
    const deadline = Date.now() + STATE_OK_TIMEOUT_MS;
    for (const [i, n] of nodes.entries()) {
      for (;;) {
        const info = await clusterInfo(n.port);
        if (info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${NODES}`)) break;
        if (!isAlive(pids[i] ?? 0)) throw new Error(`redis-cluster node on port ${n.port} exited; log ${n.logFile}:\n${tail(readFileSync(n.logFile, 'utf8'))}`);
        if (Date.now() > deadline) {
          throw new Error(
            `redis-cluster node on port ${n.port} did not report cluster_state:ok within ${STATE_OK_TIMEOUT_MS} ms; CLUSTER INFO:\n${info.trim()}`,
          );
        }
        await sleep(200);
      }
    }
  } catch (err) {
    await stopService({ pids });
    throw err;
  }
  ctx.log(`redis-cluster ready on ${addresses.join(', ')}`);
  return {
    name: 'redis-cluster',
    env: { REDIS_CLUSTER_URL: `redis://${addresses[0]}`, REDIS_CLUSTER_NODES: addresses.join(',') },
    // One process group per node; stopService stops them all.
    pids,
    dir,
    startSeconds: (Date.now() - began) / 1000,
  };
};
