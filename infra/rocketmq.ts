/**
 * A private Apache RocketMQ 5.3.3 from the Maven Central jars (infra/rocketmq/pom.xml):
 * a name server JVM, then one JVM with the broker and the gRPC proxy (`-pm local`), on free
 * loopback ports with their own dir. Topics and groups are created with the admin client
 * (createTopics, infra/RocketAdmin.java), since gRPC clients cannot create them.
 *
 * Ports: the broker also listens on listenPort-2 (its "fast"/VIP remoting server, always
 * started) and on haListenPort (set explicitly here, else listenPort+1), so both are probed.
 * Binding: the name server and the broker's remoting servers honour bindAddress=127.0.0.1;
 * the proxy's gRPC and remoting servers and the broker's HA port always bind the wildcard
 * address in 5.3.3 (no setting), so they are reachable from outside unless a firewall says no.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { ensureJars } from './jars.ts';
import { CACHE_DIR, REPO_ROOT, ensureDir, freePort, spawnDetached, stopService, waitForLogLine, type ServiceHandle, type ServiceStarter } from './lib.ts';

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
const execFileAsync = promisify(execFile);

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

/** infra/RocketAdmin.java: creates all the topics and groups of one createTopics call in one JVM. */
const ADMIN_SOURCE = join(REPO_ROOT, 'infra', 'RocketAdmin.java');
const ADMIN_JVM = ['-Xmx128m', '-Xss512k', '-XX:TieredStopAtLevel=1', ...JVM_COMMON];
let adminClassesPending: Promise<string> | undefined;

/**
 * The folder with RocketAdmin compiled against the RocketMQ jars: CACHE_DIR/rocketmq-admin-classes/<hash
 * of the source and the jar names>. javac runs once per change (about 2 s); running the source file with
 * the single-file launcher instead would compile it on every call (0.7 s of CPU each). Compiled into a
 * temporary folder and renamed, so test workers compiling at the same time do not see half a folder.
 */
function adminClasses(jars: string): Promise<string> {
  adminClassesPending ??= (async () => {
    const hash = createHash('sha256').update(readFileSync(ADMIN_SOURCE)).update(readdirSync(jars).sort().join('\n')).digest('hex').slice(0, 16);
    const dir = join(ensureDir(join(CACHE_DIR, 'rocketmq-admin-classes')), hash);
    if (existsSync(join(dir, 'RocketAdmin.class'))) return dir;
    const tmp = mkdtempSync(`${dir}.tmp-`);
    try {
      await execFileAsync('javac', ['--release', '11', '-proc:none', '-nowarn', '-encoding', 'UTF-8', '-d', tmp, '-cp', `${jars}/*`, ADMIN_SOURCE], {
        maxBuffer: 16 * 1024 * 1024,
      });
      renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      if (existsSync(join(dir, 'RocketAdmin.class'))) return dir; // another process was first
      const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
      if (e.code === 'ENOENT') {
        throw new Error('javac is not on PATH: creating RocketMQ topics needs a JDK 17+, not only a JRE (Debian: apt-get install openjdk-17-jdk-headless)');
      }
      throw new Error(`javac could not compile ${ADMIN_SOURCE}: ${e.message}\n${`${e.stdout ?? ''}${e.stderr ?? ''}`.trim()}`);
    }
    return dir;
  })();
  adminClassesPending.catch(() => (adminClassesPending = undefined)); // try again on the next call
  return adminClassesPending;
}

/**
 * Runs RocketAdmin with `args`. Its "retry: ..." lines go to `log`; it is killed when it says nothing
 * for `silentMs` (it speaks at least every 5 s while it retries, and each request has a 5 s timeout).
 */
function runRocketAdmin(
  classPath: string,
  home: string,
  args: string[],
  silentMs: number,
  log?: (msg: string) => void,
): Promise<{ code: number | null; out: string[]; error?: Error }> {
  return new Promise((res) => {
    const child = spawn('java', [...ADMIN_JVM, `-Duser.home=${home}`, '-cp', classPath, 'RocketAdmin', ...args], {
      cwd: home,
      env: { ...process.env, ROCKETMQ_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: string[] = [];
    let error: Error | undefined;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        error = new Error(`RocketAdmin said nothing for ${silentMs / 1000} s and was killed`);
        child.kill('SIGKILL');
      }, silentMs);
    };
    arm();
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        arm();
        out.push(line);
        if (line.startsWith('retry: ')) log?.(`RocketMQ admin: ${line}`);
      });
    }
    child.on('error', (err) => (error ??= err));
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, out, error });
    });
  });
}

export interface CreateTopicsOptions {
  /** Topic attribute message.type checked by the 5.x proxy on send (NORMAL, FIFO, DELAY, TRANSACTION, MIXED). */
  messageType?: string;
  /** Read and write queues per topic (default 8, as mqadmin's). */
  queues?: number;
  /** How long to retry each topic and group while the broker registers in the name server (default 60 s). */
  timeoutMs?: number;
  /** Folder for the admin client's logs (its user.home). */
  dir?: string;
  /** Told about retries. */
  log?: (msg: string) => void;
}

/**
 * Creates (or updates) `topics` and consumer `groups` in the DefaultCluster, as `mqadmin updateTopic`
 * and `mqadmin updateSubGroup` would, but all in one JVM (infra/RocketAdmin.java). Each topic and group
 * is retried for up to `timeoutMs`, since a fresh broker may not be registered in the name server yet.
 */
export async function createTopics(
  target: Pick<ServiceHandle, 'env' | 'dir'> | string,
  topics: string[],
  groups: string[],
  opts: CreateTopicsOptions = {},
): Promise<void> {
  const namesrv = typeof target === 'string' ? target : target.env.ROCKETMQ_NAMESRV;
  if (!namesrv) throw new Error('createTopics: no name server address (ROCKETMQ_NAMESRV)');
  if (topics.length === 0 && groups.length === 0) return;
  const jars = ensureJars('rocketmq');
  const home = ensureDir(opts.dir ?? (typeof target === 'string' ? join(CACHE_DIR, 'rocketmq-admin') : join(target.dir, 'admin')));
  const messageType = opts.messageType ?? 'NORMAL';
  const queues = String(opts.queues ?? 8);
  const timeoutMs = opts.timeoutMs ?? 60_000;

  const classes = await adminClasses(jars);
  const args = [namesrv, ROCKETMQ_CLUSTER, queues, messageType, String(timeoutMs), ...topics.map((t) => `topic:${t}`), ...groups.map((g) => `group:${g}`)];
  const { code, out, error } = await runRocketAdmin(`${classes}:${jars}/*`, home, args, timeoutMs + 15_000, opts.log);
  if (code === 0 && !error) return;
  const errors = out.filter((l) => l.startsWith('error: '));
  const detail = (errors.length > 0 ? errors : out.slice(-30)).join('\n') || '(no output)';
  const what = error ? error.message : `exit status ${code}`;
  throw new Error(`createTopics on ${namesrv} (${topics.length} topics, ${groups.length} groups) failed, RocketAdmin ${what}:\n${detail}`);
}

export const startRocketmq: ServiceStarter = async (ctx) => {
  const jars = ensureJars('rocketmq');
  try {
    execFileSync('java', ['-version'], { stdio: 'ignore' });
  } catch {
    throw new Error('java is not on PATH: RocketMQ needs a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless) or use TEST_INFRA=containers with Docker');
  }
  // Compiles the admin client (createTopics) while the JVMs boot, the first time only.
  adminClasses(jars).catch(() => undefined);
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
