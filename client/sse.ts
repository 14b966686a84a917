/**
 * A Server-Sent Events parser for fetch response bodies, following the WHATWG "event stream
 * interpretation" rules (Node 20 has no EventSource). It only parses: reconnecting is the
 * caller's job, with the `id` of the last message it handled.
 */

export interface SseMessage {
  /**
   * The stream's last event id when this message was dispatched: set by an `id:` line, and
   * kept for later messages that carry none. Undefined until the stream sends one.
   */
  id: string | undefined;
  /** `event:` of the message; "message" when it has none. */
  event: string;
  /** The `data:` lines, joined with "\n". */
  data: string;
  /** The reconnection time the stream asked for last (`retry:`), in ms, if it ever did. */
  retry?: number;
}

const LF = 10;
const CR = 13;

/** Splits text into lines (CRLF, LF or CR) and turns them into messages. */
class EventStreamParser {
  private pending = '';
  /** The last chunk ended with CR: an LF at the start of the next one ends no new line. */
  private afterCr = false;
  private data = '';
  private event = '';
  private lastId: string | undefined;
  private retry: number | undefined;

  *push(text: string): Generator<SseMessage> {
    if (text === '') return;
    if (this.afterCr && text.charCodeAt(0) === LF) text = text.slice(1);
    this.afterCr = false;
    const buf = this.pending + text;
    let start = 0;
    // Only the new text can hold line ends: `pending` never does.
    for (let i = this.pending.length; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      const line = buf.slice(start, i);
      if (c === CR) {
        if (i + 1 === buf.length) this.afterCr = true;
        else if (buf.charCodeAt(i + 1) === LF) i++;
      }
      start = i + 1;
      const message = this.line(line);
      if (message) yield message;
    }
    this.pending = buf.slice(start);
  }

  private line(line: string): SseMessage | undefined {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data += value + '\n';
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      // Any other field is ignored, as the spec says.
    }
    return undefined;
  }

  private dispatch(): SseMessage | undefined {
    const { data, event } = this;
    this.data = '';
    this.event = '';
    // A block without data lines (e.g. only `id:` or `retry:`) updates state but is no message.
    if (data === '') return undefined;
    const message: SseMessage = { id: this.lastId, event: event || 'message', data: data.slice(0, -1) };
    if (this.retry !== undefined) message.retry = this.retry;
    return message;
  }
}

/**
 * Yields the messages of an event stream as they complete. Ends when the body ends; a message
 * not terminated by a blank line by then is discarded (the spec's rule). Stopping early
 * (`break`) or aborting `signal` cancels the body; an abort rejects with `signal.reason`.
 */
export async function* parseSse(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder('utf-8');
  const parser = new EventStreamParser();
  // Cancelling settles a pending read() at once, so an abort never waits for the next chunk.
  const onAbort = () => void reader.cancel(signal?.reason).catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    signal?.throwIfAborted();
    for (;;) {
      const { done, value } = await reader.read();
      signal?.throwIfAborted();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // Ends the connection when the caller stops early; harmless on a finished body.
    void reader.cancel().catch(() => undefined);
  }
}
