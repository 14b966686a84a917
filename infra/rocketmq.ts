/**
 * A private Apache RocketMQ 5.3.3 from the Maven Central jars (infra/rocketmq/pom.xml):
 * a name server JVM, then one JVM with the broker and the gRPC proxy (`-pm local`), on free
 * loopback ports with their own dir. Topics and groups are created with the admin tool,
 * since gRPC clients cannot create them.
 *
 * Ports: the broker also listens on listenPort-2 (its "fast"/VIP remoting server, always
 * started) and on haListenPort (set explicitly here, else listenPort+1), so both are probed.
 * Binding: the name server and the broker's remoting servers honour bindAddress=127.0.0.1;
 * the proxy's gRPC and remoting servers and the broker's HA port always bind the wildcard
 * address in 5.3.3 (no setting), so they are reachable from outside unless a firewall says no.
 */
import { sleep } from '../common/backoff.ts';
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ensureJars } from './jars.ts';
import { CACHE_DIR, ensureDir, freePort, spawnDetached, stopService, waitForLogLine, type ServiceHandle, type ServiceStarter } from './lib.ts';

/** Printed to stdout by NamesrvStartup once the name server listens. */
const NAMESRV_READY = 'The Name Server boot success';
/** Printed to stdout by ProxyStartup once the broker, the gRPC and the remoting servers are up. */
const PROXY_READY = 'rocketmq-proxy startup successfully';

export const ROCKETMQ_CLUSTER = 'DefaultCluster';
/**
 * The product's default topics (common/config.ts): the request topic of each priority, the
 * result topic and the dead-letter topic of the default group; and the group of each priority.
 */
export const DEFAULT_TOPICS = ['TopicTest', 'TopicTest-high', 'TopicTest-low', 'TopicResult', '%DLQ%GID_AGENT'];
export const DEFAULT_GROUPS = ['GID_AGENT', 'GID_AGENT-high', 'GID_AGENT-low'];

const JVM_COMMON = ['-XX:+UseSerialGC', '-Djava.awt.headless=true', '-Djava.net.preferIPv4Stack=true'];
/**
 * Name server only: -Xrs leaves SIGTERM to the OS, so stopGroup ends it at once instead of
 * after a 6 s graceful shutdown (it keeps nothing worth saving). Not for the broker+proxy:
 * its gRPC server must close the clients' telemetry streams (3 s, grpcShutdownTimeSeconds);
 * when the proxy dies abruptly, rocketmq-client-nodejs 1.0.8 crashes the Node process with an
 * unhandled 'error' (ECONNRESET) on the telemetry stream of a client that was just shut down
 * (TelemetrySession.release() removes the stream's listeners before the stream has ended).
 * The rest of the broker's graceful shutdown takes ~12 s, so stopGroup SIGKILLs it after 10 s.
 */
const NAMESRV_JVM = [...JVM_COMMON, '-Xrs'];

/** True when nothing listens on `port` on any interface (the HA server binds the wildcard). */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => res(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => res(true)));
  });
}

/** A free port not in `taken` (which it joins), optionally with `port - below` free too. */
async function pickPort(taken: Set<number>, below = 0): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const p = await freePort();
    if (taken.has(p) || !(await portIsFree(p))) continue;
    if (below > 0) {
      const q = p - below;
      if (q < 1024 || taken.has(q) || !(await portIsFree(q))) continue;
      taken.add(q);
    }
    taken.add(p);
    return p;
  }
  throw new Error('could not find free loopback ports for RocketMQ');
}

/**
 * Runs one MQAdminStartup command. Its output says " success." once the broker has answered;
 * the JVM then spends about 3 s in client shutdown (thread joins), so it is killed right away.
 */
function runAdmin(jars: string, home: string, args: string[]): Promise<{ ok: boolean; out: string; fatal?: boolean }> {
  return new Promise((res) => {
    const child = spawn(
      'java',
      [
        '-Xmx128m',
        '-Xss512k',
        '-XX:TieredStopAtLevel=1',
        ...JVM_COMMON,
        `-Duser.home=${home}`,
        '-cp',
        `${jars}/*`,
        'org.apache.rocketmq.tools.command.MQAdminStartup',
        ...args,
      ],
      { cwd: home, env: { ...process.env, ROCKETMQ_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let ok = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString('utf8');
      if (!ok && / success\./.test(out)) {
        ok = true;
        setTimeout(() => child.kill('SIGKILL'), 100);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (err) => {
      clearTimeout(timer);
      res({ ok: false, out: `${out}\n${err.message}`, fatal: true });
    });
    child.on('close', () => {
      clearTimeout(timer);
      res({ ok, out });
    });
  });
}

export interface CreateTopicsOptions {
  /** Topic attribute message.type checked by the 5.x proxy on send (NORMAL, FIFO, DELAY, TRANSACTION, MIXED). */
  messageType?: string;
  /** Read and write queues per topic (admin tool default: 8). */
  queues?: number;
  /** How long to retry while the broker registers in the name server. */
  timeoutMs?: number;
  /** Folder for the admin tool's logs (its user.home). */
  dir?: string;
  /** Told about retries. */
  log?: (msg: string) => void;
}

/**
 * Creates (or updates) `topics` and consumer `groups` in the DefaultCluster with
 * MQAdminStartup. The tool exits 0 even when it fails, so its output must say "success";
 * failures are retried until `timeoutMs` since a fresh broker may not be registered yet.
 */
export async function createTopics(
  target: Pick<ServiceHandle, 'env' | 'dir'> | string,
  topics: string[],
  groups: string[],
  opts: CreateTopicsOptions = {},
): Promise<void> {
  const namesrv = typeof target === 'string' ? target : target.env.ROCKETMQ_NAMESRV;
  if (!namesrv) throw new Error('createTopics: no name server address (ROCKETMQ_NAMESRV)');
  const jars = ensureJars('rocketmq');
  const home = ensureDir(opts.dir ?? (typeof target === 'string' ? join(CACHE_DIR, 'rocketmq-admin') : join(target.dir, 'admin')));
  const messageType = opts.messageType ?? 'NORMAL';
  const queues = String(opts.queues ?? 8);
  const timeoutMs = opts.timeoutMs ?? 60_000;

  const commands: string[][] = [
    ...topics.map((t) => ['updateTopic', '-n', namesrv, '-c', ROCKETMQ_CLUSTER, '-t', t, '-r', queues, '-w', queues, '-a', `+message.type=${messageType}`]),
    ...groups.map((g) => ['updateSubGroup', '-n', namesrv, '-c', ROCKETMQ_CLUSTER, '-g', g]),
  ];
  const runOne = async (args: string[]): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { ok, out, fatal } = await runAdmin(jars, home, args);
      if (ok) return;
      const tailOut = out.trim().split('\n').slice(-30).join('\n');
      if (fatal || Date.now() > deadline) throw new Error(`mqadmin ${args.join(' ')} failed on ${namesrv}:\n${tailOut}`);
      opts.log?.(`mqadmin ${args[0]} ${args[args.length - 1]} not done yet, retrying: ${tailOut.split('\n')[0] || '(no output)'}`);
      await sleep(1000);
    }
  };
  // Each command is a JVM (about a second of CPU); run a few at once.
  const queue = [...commands];
  const workers = Array.from({ length: Math.min(3, queue.length) }, async () => {
    for (let args = queue.shift(); args; args = queue.shift()) await runOne(args);
  });
  await Promise.all(workers);
}

export const startRocketmq: ServiceStarter = async (ctx) => {
  const jars = ensureJars('rocketmq');
  try {
    execFileSync('java', ['-version'], { stdio: 'ignore' });
  } catch {
    throw new Error('java is not on PATH: RocketMQ needs a JRE 17+ (Debian: apt-get install openjdk-17-jre-headless) or use TEST_INFRA=containers with Docker');
  }
  const dir = ensureDir(join(ctx.runDir, 'rocketmq'));
  const home = ensureDir(join(dir, 'home')); // user.home: logs/rocketmqlogs/*.log, namesrv kv config
  const rmqHome = ensureDir(join(dir, 'rocketmq-home')); // ROCKETMQ_HOME: must be set, may be empty
  const store = ensureDir(join(dir, 'store'));
  const classPath = `${jars}/*`;
  const env = { ROCKETMQ_HOME: rmqHome, NAMESRV_ADDR: '' };

  const taken = new Set<number>();
  const nsPort = await pickPort(taken);
  const brokerPort = await pickPort(taken, 2); // the broker also listens on brokerPort-2
  const haPort = await pickPort(taken);
  const grpcPort = await pickPort(taken);
  const remotingPort = await pickPort(taken);
  const namesrv = `127.0.0.1:${nsPort}`;

  const nsConf = join(dir, 'namesrv.properties');
  writeFileSync(nsConf, [`listenPort=${nsPort}`, 'bindAddress=127.0.0.1', ''].join('\n'));
  const brokerConf = join(dir, 'broker.conf');
  writeFileSync(
    brokerConf,
    [
      `brokerClusterName=${ROCKETMQ_CLUSTER}`,
      'brokerName=broker-a',
      'brokerId=0',
      'brokerRole=ASYNC_MASTER',
      'flushDiskType=ASYNC_FLUSH',
      'brokerIP1=127.0.0.1',
      'brokerIP2=127.0.0.1',
      'bindAddress=127.0.0.1',
      `listenPort=${brokerPort}`,
      `haListenPort=${haPort}`,
      `namesrvAddr=${namesrv}`,
      `storePathRootDir=${store}`,
      `storePathCommitLog=${join(store, 'commitlog')}`,
      'mappedFileSizeCommitLog=67108864',
      // Topics are created explicitly (createTopics); gRPC clients never auto-create them anyway.
      'autoCreateTopicEnable=false',
      'autoCreateSubscriptionGroup=true',
      // SimpleConsumer (pop) bookkeeping in memory: a pop's checkpoint and its ack meet in a
      // buffer instead of each being written to the revive topic, and a batch of acks is one
      // write. Without these the broker spends most of its CPU on that bookkeeping.
      'enablePopBufferMerge=true',
      'enablePopBatchAck=true',
      'deleteWhen=04',
      'fileReservedTime=48',
      '',
    ].join('\n'),
  );
  const proxyConf = join(dir, 'rmq-proxy.json');
  writeFileSync(
    proxyConf,
    JSON.stringify(
      {
        rocketMQClusterName: ROCKETMQ_CLUSTER,
        namesrvAddr: namesrv,
        grpcServerPort: grpcPort,
        remotingListenPort: remotingPort,
        grpcShutdownTimeSeconds: 3,
        enablePrintJstack: false,
      },
      null,
      2,
    ),
  );

  const began = Date.now();
  const nsLog = join(dir, 'namesrv.out');
  const nsPid = spawnDetached(
    'java',
    ['-Xmx256m', '-Xms128m', '-Xss512k', ...NAMESRV_JVM, `-Duser.home=${home}`, '-cp', classPath, 'org.apache.rocketmq.namesrv.NamesrvStartup', '-c', nsConf],
    { cwd: dir, logFile: nsLog, env },
  );
  const pids = [nsPid];
  try {
    await waitForLogLine(nsLog, NAMESRV_READY, nsPid, 60_000, `rocketmq name server on port ${nsPort}`);
    ctx.log(`rocketmq name server ready on ${namesrv}`);

    const proxyLog = join(dir, 'proxy.out');
    const proxyArgs = [
      '-Xmx512m',
      '-Xms256m',
      '-Xss512k',
      ...JVM_COMMON,
      `-Duser.home=${home}`,
      '-cp',
      classPath,
      'org.apache.rocketmq.proxy.ProxyStartup',
      '-pm',
      'local',
      '-n',
      namesrv,
      '-bc',
      brokerConf,
      '-pc',
      proxyConf,
    ];
    const proxyPid = spawnDetached('java', proxyArgs, { cwd: dir, logFile: proxyLog, env });
    pids.push(proxyPid);
    await waitForLogLine(proxyLog, PROXY_READY, proxyPid, 120_000, `rocketmq broker+proxy (gRPC port ${grpcPort})`);
    ctx.log(`rocketmq proxy ready on 127.0.0.1:${grpcPort}`);

    const handle: ServiceHandle = {
      name: 'rocketmq',
      env: { MQ_ENDPOINT: `127.0.0.1:${grpcPort}`, ROCKETMQ_NAMESRV: namesrv },
      pids,
      dir,
      startSeconds: 0,
      // The broker+proxy JVM (the name server stays up): its store keeps topics and messages.
      relaunch: { cmd: 'java', args: proxyArgs, cwd: dir, logFile: proxyLog, ready: PROXY_READY, env },
    };
    await createTopics(handle, DEFAULT_TOPICS, DEFAULT_GROUPS, { log: ctx.log });
    ctx.log(`rocketmq topics ${DEFAULT_TOPICS.join(', ')} and group ${DEFAULT_GROUPS.join(', ')} created`);
    handle.startSeconds = (Date.now() - began) / 1000;
    return handle;
  } catch (err) {
    await stopService({ pids });
    throw err;
  }
};
