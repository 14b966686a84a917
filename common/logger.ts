/** A small structured logger: JSON lines for machines, one readable line for people. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: 'pretty' | 'json';
  /** Where lines go; defaults to stderr so stdout stays free for program output. */
  write?: (line: string) => void;
}

function render(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  if (typeof v === 'string') return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v) ?? String(v);
}

export function createLogger(opts: LoggerOptions = {}, bound: LogFields = {}): Logger {
  const min = ORDER[opts.level ?? 'info'];
  const format = opts.format ?? 'pretty';
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const log = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[level] < min) return;
    const all = { ...bound, ...fields };
    if (format === 'json') {
      const plain = Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v instanceof Error ? v.message : v]));
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...plain }));
    } else {
      const extra = Object.entries(all)
        .map(([k, v]) => `${k}=${render(v)}`)
        .join(' ');
      write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}${extra ? ' ' + extra : ''}`);
    }
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => createLogger(opts, { ...bound, ...fields }),
  };
}

/** A logger that drops everything, for tests. */
export const silentLogger: Logger = createLogger({ write: () => undefined, level: 'error' });
