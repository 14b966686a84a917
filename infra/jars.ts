/**
 * Jars of the JVM services, fetched from Maven Central by `mvn dependency:copy-dependencies`
 * (poms in infra/<svc>/pom.xml) into CACHE_DIR/jars/<svc>. A `.complete` marker is written
 * only after a successful copy, so an interrupted download is redone on the next run.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CACHE_DIR, REPO_ROOT, ensureDir } from './lib.ts';

export type JarService = 'kafka' | 'rocketmq';

/** Folder holding the jars of `svc` (use `<dir>/*` as the java class path). */
export function jarsDir(svc: JarService): string {
  return join(CACHE_DIR, 'jars', svc);
}

/** Makes sure the jars of `svc` are in the cache, running mvn when they are not; returns their folder. */
export function ensureJars(svc: JarService): string {
  const dir = jarsDir(svc);
  const marker = join(dir, '.complete');
  if (existsSync(marker)) return dir;
  try {
    execFileSync('mvn', ['-v'], { stdio: 'ignore' });
  } catch {
    throw new Error(
      `mvn (Apache Maven) is not on PATH: it is needed once to fetch the ${svc} jars from Maven Central ` +
        `(Debian: apt-get install maven), or use TEST_INFRA=containers with Docker`,
    );
  }
  // A folder without the marker is a partial download: start it over.
  rmSync(dir, { recursive: true, force: true });
  ensureDir(dir);
  const pom = join(REPO_ROOT, 'infra', svc, 'pom.xml');
  try {
    execFileSync('mvn', ['-q', '-B', '-f', pom, 'dependency:copy-dependencies', `-DoutputDirectory=${dir}`], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`mvn could not fetch the ${svc} jars (pom ${pom}): ${e.message}\n${out}`);
  }
  writeFileSync(marker, `${new Date().toISOString()}\n`);
  return dir;
}
