import { describe, expect, it } from 'vitest';
import { silentLogger } from '../common/logger.ts';
import type { TransitionCode } from '../common/store/port.ts';
import type { HandlerEvent } from '../common/task.ts';
import { EventRecorder, MAX_PENDING_EVENTS } from './event-recorder.ts';

const log = (n: number): HandlerEvent => ({ type: 'log', data: { level: 'info', message: `line ${n}` } });
const turn = () => new Promise((r) => setImmediate(r));

/** A store write under the test's control. */
function writes() {
  const calls: HandlerEvent[][] = [];
  const pending: { resolve(code: TransitionCode): void; reject(err: Error): void }[] = [];
  const write = (events: HandlerEvent[]) => {
    calls.push(events);
    return new Promise<TransitionCode>((resolve, reject) => pending.push({ resolve, reject }));
  };
  return { calls, pending, write };
}

describe('EventRecorder', () => {
  it('hands everything reported within one turn to the end transition, with no write of its own', async () => {
    const w = writes();
    const r = new EventRecorder(w.write, () => undefined, silentLogger);
    for (let i = 0; i < 5; i++) await r.add(log(i));
    expect(await r.end()).toEqual([0, 1, 2, 3, 4].map(log));
    await turn();
    expect(w.calls).toEqual([]);
  });

  it('writes the first event at the next turn, and coalesces the ones that come during the write, in order', async () => {
    const w = writes();
    const r = new EventRecorder(w.write, () => undefined, silentLogger);
    await r.add(log(0));
    await turn();
    expect(w.calls).toEqual([[log(0)]]);
    for (let i = 1; i < 4; i++) await r.add(log(i));
    await turn();
    expect(w.calls).toHaveLength(1);
    w.pending.shift()?.resolve('ok');
    await turn();
    expect(w.calls).toEqual([[log(0)], [log(1), log(2), log(3)]]);
    const ended = r.end();
    await r.add(log(9)); // after the end: dropped
    w.pending.shift()?.resolve('ok');
    expect(await ended).toEqual([]);
  });

  it('keeps the events of a failed write, in order, for the end transition', async () => {
    const w = writes();
    const r = new EventRecorder(w.write, () => undefined, silentLogger);
    await r.add(log(0));
    await turn();
    await r.add(log(1));
    w.pending.shift()?.reject(new Error('redis is down'));
    expect(await r.end()).toEqual([log(0), log(1)]);
  });

  it('reports the code of each write (a lost task)', async () => {
    const w = writes();
    const codes: TransitionCode[] = [];
    const r = new EventRecorder(w.write, (c) => codes.push(c), silentLogger);
    await r.add(log(0));
    await turn();
    w.pending.shift()?.resolve('not_owner');
    await r.end();
    expect(codes).toEqual(['not_owner']);
  });

  it('makes a handler that reports faster than the store takes it wait for the write in flight', async () => {
    const w = writes();
    const r = new EventRecorder(w.write, () => undefined, silentLogger);
    await r.add(log(0));
    await turn();
    for (let i = 1; i <= MAX_PENDING_EVENTS; i++) await r.add(log(i));
    let released = false;
    const blocked = r.add(log(MAX_PENDING_EVENTS + 1)).then(() => (released = true));
    await turn();
    expect(released).toBe(false);
    w.pending.shift()?.resolve('ok');
    await blocked;
    expect(released).toBe(true);
    await turn();
    expect(w.calls[1]).toHaveLength(MAX_PENDING_EVENTS + 1);
    w.pending.shift()?.resolve('ok');
    expect(await r.end()).toEqual([]);
  });
});
