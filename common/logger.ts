/**
 * The structured logger, on pino: one JSON object per line on stderr (or one readable line
 * through pino-pretty), written synchronously so nothing is lost on process.exit. Every line
 * has `level` (a label), `time` (ISO 8601) and `msg`; inside an active OpenTelemetry span it
 * also has `trace_id` and `span_id`. Payloads and credentials are redacted.
 */
import { isSpanContextValid, trace } from '@opentelemetry/api';
import { pino, stdSerializers, stdTimeFunctions, type DestinationStream, type Logger as PinoLogger } from 'pino';
import { prettyFactory } from 'pino-pretty';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
  /** Whether a line at `level` would be written: check it before building costly fields. Absent means yes. */
  enabled?(level: LogLevel): boolean;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: 'pretty' | 'json';
  /** Where lines go (one line, without its newline); defaults to stderr so stdout stays free for program output. */
  write?: (line: string) => void;
  /** Log task input, output, results and message bodies as they are (LOG_PAYLOADS=true); credentials stay redacted. */
  payloads?: boolean;
}

/** Fields that hold what callers sent or tasks produced: redacted unless payloads are logged. */
export const PAYLOAD_FIELDS = ['input', 'output', 'result', 'results', 'content', 'body', 'prompt', 'messages', 'completion', 'chunk'] as const;
/** Fields that hold credentials: always redacted. */
export const SECRET_FIELDS = ['authorization', 'password', 'secret', 'api_key', 'apiKey', 'token'] as const;
export const REDACTED = '[redacted]';

function redactPaths(payloads: boolean): string[] {
  const fields: string[] = payloads ? [...SECRET_FIELDS] : [...PAYLOAD_FIELDS, ...SECRET_FIELDS];
  // At the top level and two levels down: a handler's ctx.log data sits under `data`, so its own objects are one level more.
  return [...fields, ...fields.map((f) => `*.${f}`), ...fields.map((f) => `*.*.${f}`)];
}

const NO_TRACE = Object.freeze({});

/** trace_id and span_id of the active span, if there is a valid one (none without an SDK). */
function traceMixin(): object {
  const span = trace.getActiveSpan();
  if (!span) return NO_TRACE;
  const sc = span.spanContext();
  return isSpanContextValid(sc) ? { trace_id: sc.traceId, span_id: sc.spanId } : NO_TRACE;
}

/** Errors under any key render as pino's `{type, message, stack}` (JSON.stringify would give `{}`). */
function serializeErrors(obj: Record<string, unknown>): Record<string, unknown> {
  let out = obj;
  for (const k in obj) {
    const v = obj[k];
    if (v instanceof Error && k !== 'err') {
      if (out === obj) out = { ...obj };
      out[k] = stdSerializers.err(v);
    }
  }
  return out;
}

function destination(opts: LoggerOptions): DestinationStream {
  const write = opts.write;
  const out = write ? (s: string) => write(s.endsWith('\n') ? s.slice(0, -1) : s) : null;
  if (opts.format === 'pretty') {
    const pretty = prettyFactory({ colorize: out ? false : process.stderr.isTTY === true, singleLine: true, translateTime: false, errorLikeObjectKeys: [] });
    const sink = out ? { write: out } : pino.destination({ fd: 2, sync: true });
    return { write: (s: string) => void sink.write(pretty(s)) };
  }
  return out ? { write: out } : pino.destination({ fd: 2, sync: true });
}

function wrap(p: PinoLogger): Logger {
  return {
    debug: (msg, fields) => (fields ? p.debug(fields, msg) : p.debug(msg)),
    info: (msg, fields) => (fields ? p.info(fields, msg) : p.info(msg)),
    warn: (msg, fields) => (fields ? p.warn(fields, msg) : p.warn(msg)),
    error: (msg, fields) => (fields ? p.error(fields, msg) : p.error(msg)),
    child: (fields) => wrap(p.child(fields)),
    enabled: (level) => p.isLevelEnabled(level),
  };
}

export function createLogger(opts: LoggerOptions = {}, bound: LogFields = {}): Logger {
  const p = pino(
    {
      level: opts.level ?? 'info',
      base: null,
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: serializeErrors },
      mixin: traceMixin,
      mixinMergeStrategy: (merge, mix) => (mix === NO_TRACE ? merge : Object.assign(mix, merge)),
      redact: { paths: redactPaths(opts.payloads === true), censor: REDACTED },
    },
    destination({ format: 'json', ...opts }),
  );
  return wrap(Object.keys(bound).length > 0 ? p.child(bound) : p);
}

const noop = () => undefined;

/** A logger that drops everything, for tests. */
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
  enabled: () => false,
};
