/**
 * What a handler reports (progress, log lines, partial output) on its way to the store.
 *
 * The first event is written at the next turn of the event loop; events that come while a
 * write is in flight wait and go together in the next write, in order. What is still
 * waiting when the handler ends is handed to the transition that ends the attempt, so it is
 * stored in the same step as the end, before the end event: a fast handler costs one write
 * in all, a slow one a write per burst of events.
 */
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { TransitionCode } from '../common/store/port.ts';
import type { HandlerEvent } from '../common/task.ts';

/** Events waiting past this make the handler's next report wait for the write in flight. */
export const MAX_PENDING_EVENTS = 256;
/** Pause before writing again after a failed write (the store is likely down). */
const RETRY_MS = 500;

export class EventRecorder {
  private pending: HandlerEvent[] = [];
  private inFlight: Promise<void> | undefined;
  private scheduled = false;
  private ended = false;

  constructor(
    private readonly write: (events: HandlerEvent[]) => Promise<TransitionCode>,
    /** Told the code of every write; anything but 'ok' means the task is no longer ours. */
    private readonly onCode: (code: TransitionCode) => void,
    private readonly log: Logger,
  ) {}

  /** Resolves once the event is queued (at once, unless too many are waiting). */
  add(event: HandlerEvent): Promise<void> {
    if (this.ended) return Promise.resolve();
    this.pending.push(event);
    if (this.inFlight === undefined && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    if (this.pending.length > MAX_PENDING_EVENTS && this.inFlight) return this.inFlight;
    return Promise.resolve();
  }

  /** Stops writing and answers what was not written yet, in order, for the end transition. */
  async end(): Promise<HandlerEvent[]> {
    this.ended = true;
    while (this.inFlight) await this.inFlight;
    return this.pending.splice(0);
  }

  private flush(): void {
    if (this.ended || this.inFlight || this.pending.length === 0) return;
    const batch = this.pending.splice(0);
    let failed = false;
    this.inFlight = (async () => {
      try {
        this.onCode(await this.write(batch));
      } catch (err) {
        // Kept, in order, for the next write or the end transition.
        failed = true;
        this.pending.unshift(...batch);
        this.log.warn('could not record the handler events yet; will retry', { events: batch.length, err: errorMessage(err) });
      }
    })().finally(() => {
      this.inFlight = undefined;
      if (this.ended || this.pending.length === 0) return;
      if (failed) setTimeout(() => this.flush(), RETRY_MS).unref();
      else this.flush();
    });
  }
}
