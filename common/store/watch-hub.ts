/**
 * The watches of one process, over one shared subscription: the first watch of a task
 * subscribes to its channel, the last one to close unsubscribes, and a notification wakes
 * every watch of that task. Stores supply how to subscribe; this keeps the bookkeeping.
 */
import type { TaskWatch } from './port.ts';

export interface WatchHubHooks {
  /** Starts listening for news of `id`; rejects when that cannot be done (the store is down). */
  subscribe(id: string): Promise<void>;
  /** Stops listening for `id`; errors are the hook's to handle. */
  unsubscribe(id: string): void;
}

interface Watcher {
  dirty: boolean;
  wake: (() => void) | undefined;
}

interface Channel {
  watchers: Set<Watcher>;
  ready: Promise<void>;
}

export class WatchHub {
  private readonly channels = new Map<string, Channel>();

  constructor(private readonly hooks: WatchHubHooks) {}

  async watch(id: string): Promise<TaskWatch> {
    const key = id.toLowerCase();
    let channel = this.channels.get(key);
    if (!channel) {
      const fresh: Channel = { watchers: new Set(), ready: this.hooks.subscribe(key) };
      channel = fresh;
      this.channels.set(key, fresh);
      // A failed subscription must not stay cached for the next watch.
      fresh.ready.catch(() => {
        if (this.channels.get(key) === fresh) this.channels.delete(key);
      });
    }
    const watcher: Watcher = { dirty: false, wake: undefined };
    channel.watchers.add(watcher);
    try {
      await channel.ready;
    } catch (err) {
      channel.watchers.delete(watcher);
      throw err;
    }
    const owner = channel;
    let closed = false;
    return {
      changed: (timeoutMs, signal) => {
        if (watcher.dirty || closed || signal?.aborted) {
          const was = watcher.dirty;
          watcher.dirty = false;
          return Promise.resolve(was);
        }
        return new Promise<boolean>((resolve) => {
          const done = (heard: boolean) => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
            watcher.wake = undefined;
            watcher.dirty = false;
            resolve(heard);
          };
          const onAbort = () => done(false);
          const timer = setTimeout(() => done(false), timeoutMs);
          signal?.addEventListener('abort', onAbort, { once: true });
          watcher.wake = () => done(true);
        });
      },
      close: () => {
        if (closed) return;
        closed = true;
        watcher.wake?.();
        owner.watchers.delete(watcher);
        if (owner.watchers.size === 0 && this.channels.get(key) === owner) {
          this.channels.delete(key);
          this.hooks.unsubscribe(key);
        }
      },
    };
  }

  /** News of `id`: wakes its watches, or marks them so their next `changed()` answers at once. */
  notify(id: string): void {
    const channel = this.channels.get(id.toLowerCase());
    if (channel) for (const w of channel.watchers) this.wakeOne(w);
  }

  /** Wakes every watch (e.g. after a reconnect, when news may have been missed). */
  notifyAll(): void {
    for (const channel of this.channels.values()) for (const w of channel.watchers) this.wakeOne(w);
  }

  private wakeOne(w: Watcher): void {
    w.dirty = true;
    w.wake?.();
  }
}
