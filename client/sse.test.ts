import { describe, expect, it } from 'vitest';
import { parseSse, type SseMessage } from './sse.ts';

const enc = new TextEncoder();

/** A body that hands out exactly these chunks. */
function body(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(ctl) {
      for (const c of chunks) ctl.enqueue(typeof c === 'string' ? enc.encode(c) : c);
      ctl.close();
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<SseMessage[]> {
  const out: SseMessage[] = [];
  for await (const m of parseSse(stream)) out.push(m);
  return out;
}

/** Every event stream feature at once, with multi-byte characters. */
const SAMPLE = [
  ': keep-alive',
  'retry: 2500',
  'id: 1732250000000-0',
  'event: status',
  'data: {"status":"running","note":"机械键盘降价了"}',
  '',
  'event: log',
  'data: first line',
  'data:second line ✓',
  'data',
  '',
  'data: no event name, id kept',
  '',
  'id: 1732250000000-1',
  '',
  'id: 1732250000000-2',
  'event: done',
  'data: {"result":"🎉"}',
  '',
];

const EXPECTED: SseMessage[] = [
  { id: '1732250000000-0', event: 'status', data: '{"status":"running","note":"机械键盘降价了"}', retry: 2500 },
  { id: '1732250000000-0', event: 'log', data: 'first line\nsecond line ✓\n', retry: 2500 },
  { id: '1732250000000-0', event: 'message', data: 'no event name, id kept', retry: 2500 },
  { id: '1732250000000-2', event: 'done', data: '{"result":"🎉"}', retry: 2500 },
];

describe('parseSse', () => {
  it.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ])('parses a stream with %s line ends in one chunk', async (_name, eol) => {
    expect(await collect(body([SAMPLE.join(eol) + eol]))).toEqual(EXPECTED);
  });

  it.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ])('gives the same messages however a %s stream is cut in two, mid-character and mid-CRLF included', async (_name, eol) => {
    const bytes = enc.encode(SAMPLE.join(eol) + eol);
    for (let cut = 1; cut < bytes.length; cut++) {
      const got = await collect(body([bytes.subarray(0, cut), bytes.subarray(cut)]));
      expect(got, `cut at byte ${cut}`).toEqual(EXPECTED);
    }
  });

  it('gives the same messages when the stream comes one byte at a time', async () => {
    const bytes = enc.encode(SAMPLE.join('\r\n') + '\r\n');
    const chunks = Array.from(bytes, (b) => Uint8Array.of(b));
    expect(await collect(body(chunks))).toEqual(EXPECTED);
  });

  it('dispatches nothing for blocks without data, and an empty message for an empty data line', async () => {
    const got = await collect(body(['event: status\n\n', 'id: 7\n\n', ': only a comment\n\n', 'data:\n\n']));
    expect(got).toEqual([{ id: '7', event: 'message', data: '' }]);
  });

  it('strips one space after the colon, not more, and ignores unknown fields, a bad retry and an id with NUL', async () => {
    const got = await collect(body(['id: a\nid: b\0c\nretry: soon\nfoo: bar\ndata:  two spaces\n\n']));
    expect(got).toEqual([{ id: 'a', event: 'message', data: ' two spaces' }]);
  });

  it('lets an empty id reset the last event id', async () => {
    const got = await collect(body(['id: 1\ndata: a\n\nid\ndata: b\n\n']));
    expect(got.map((m) => m.id)).toEqual(['1', '']);
  });

  it('discards a message the stream ends in the middle of, as the spec says', async () => {
    const got = await collect(body(['data: complete\n\n', 'data: cut off\n']));
    expect(got.map((m) => m.data)).toEqual(['complete']);
  });

  it('skips a byte order mark at the start', async () => {
    const got = await collect(body([Uint8Array.of(0xef, 0xbb), Uint8Array.of(0xbf), 'event: x\ndata: y\n\n']));
    expect(got).toEqual([{ id: undefined, event: 'x', data: 'y' }]);
  });

  it('cancels the body when the caller stops early', async () => {
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(enc.encode('data: one\n\ndata: two\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const m of parseSse(stream)) {
      expect(m.data).toBe('one');
      break;
    }
    expect(cancelled).toBe(true);
  });

  it('rejects with the reason of an abort while waiting for the next chunk, and cancels the body', async () => {
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(enc.encode('data: one\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    const ac = new AbortController();
    const seen: string[] = [];
    const reason = new Error('stop');
    const run = (async () => {
      for await (const m of parseSse(stream, ac.signal)) {
        seen.push(m.data);
        // Later, so the parser is waiting on a read that no chunk will ever answer.
        setTimeout(() => ac.abort(reason), 5);
      }
    })();
    await expect(run).rejects.toBe(reason);
    expect(seen).toEqual(['one']);
    expect(cancelled).toBe(true);
  });
});
