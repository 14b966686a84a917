/**
 * A private single-node Apache Kafka 3.9.1 (KRaft combined broker+controller) from the
 * Maven Central jars (infra/kafka/pom.xml), on free loopback ports with its own dir.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureJars } from './jars.ts';
import { ensureDir, freePort, spawnDetached, stopGroup, waitForLogLine, type ServiceStarter } from './lib.ts';

/** Logged by KafkaRaftServer once the broker and the controller are up. */
const READY_LINE = /\[KafkaRaftServer nodeId=1\] Kafka Server started/;

/**
 * A cluster id in Kafka's Uuid format: 16 random bytes as unpadded base64url (22 chars).
 * One that starts with '-' would be read by StorageTool as an option (1 run in 64 failed so).
 */
function randomClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

const LOG4J = `log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
`;

export const startKafka: ServiceStarter = async (ctx) => {
  const jars = ensureJars('kafka');
  try {
    execFileSync('java', ['-version'], { stdio: 'ignore' });
  } catch {
    throw new Error('java is not on PATH: Kafka needs a JRE 17+ (Debian: apt-get install openjdk-17-jre-headless) or use TEST_INFRA=containers with Docker');
  }
  const dir = ensureDir(join(ctx.runDir, 'kafka'));
  const dataDir = ensureDir(join(dir, 'data'));
  const port = await freePort();
  let ctrlPort = await freePort();
  while (ctrlPort === port) ctrlPort = await freePort();

  const propsFile = join(dir, 'server.properties');
  writeFileSync(
    propsFile,
    [
      'node.id=1',
      'process.roles=broker,controller',
      `controller.quorum.voters=1@127.0.0.1:${ctrlPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${ctrlPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${dataDir}`,
      'num.partitions=4',
      'default.replication.factor=1',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=4',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'transaction.state.log.num.partitions=4',
      'group.initial.rebalance.delay.ms=0',
      // Lets tests detect a killed consumer within 2 s (the broker's default floor is 6 s).
      'group.min.session.timeout.ms=1000',
      'auto.create.topics.enable=false',
      'num.network.threads=2',
      'num.io.threads=4',
      'log.retention.hours=24',
      '',
    ].join('\n'),
  );
  const log4jFile = join(dir, 'log4j.properties');
  writeFileSync(log4jFile, LOG4J);
  const classPath = `${jars}/*`;
  const log4jOpt = `-Dlog4j.configuration=file:${log4jFile}`;

  const began = Date.now();
  const clusterId = randomClusterId();
  let formatOut: string;
  try {
    formatOut = execFileSync(
      'java',
      [
        '-Xmx256m',
        '-XX:+UseSerialGC',
        '-XX:TieredStopAtLevel=1',
        '-cp',
        classPath,
        log4jOpt,
        'kafka.tools.StorageTool',
        'format',
        '-t',
        clusterId,
        '-c',
        propsFile,
      ],
      { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`kafka StorageTool format failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  if (!formatOut.includes('Formatting')) {
    throw new Error(`kafka StorageTool format did not format ${dataDir}:\n${formatOut}`);
  }

  const logFile = join(dir, 'kafka.log');
  const args = ['-Xmx512m', '-Xms256m', '-XX:+UseSerialGC', '-Djava.awt.headless=true', '-cp', classPath, log4jOpt, 'kafka.Kafka', propsFile];
  const pid = spawnDetached('java', args, { cwd: dir, logFile });
  try {
    await waitForLogLine(logFile, READY_LINE, pid, 90_000, `kafka on port ${port}`);
  } catch (err) {
    await stopGroup(pid);
    throw err;
  }
  ctx.log(`kafka ready on 127.0.0.1:${port}`);
  return {
    name: 'kafka',
    env: { KAFKA_BROKERS: `127.0.0.1:${port}` },
    pids: [pid],
    dir,
    startSeconds: (Date.now() - began) / 1000,
    relaunch: { cmd: 'java', args, cwd: dir, logFile, ready: 'Kafka Server started' },
  };
};
