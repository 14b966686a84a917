/**
 * In-process broker for the embedded default and unit tests. A topic fans out to every
 * group; a group hands each message to one member at a time, round-robin among members with
 * a free slot; a throw or a member that leaves without finishing puts the message back.
 */
import type { Broker, BrokerStats, CloseOptions, Delivery, DeliveryHandler, OutgoingMessage, SubscribeOptions, Subscription } from './port.ts';
import { drainHandlers, redeliveryDelayMs as defaultDelay } from './port.ts';

interface Pending {
  message: OutgoingMessage;
  attempt: number;
}

interface Member {
  handler: DeliveryHandler;
  concurrency: number;
  running: Set<Promise<void>>;
  /** Messages this member holds, put back if it leaves before they finish. */
  held: Set<Pending>;
  closed: boolean;
}

class Group {
  readonly queue: Pending[] = [];
  readonly members: Member[] = [];
  private next = 0;
  private timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly topic: string,
    private readonly delay: (attempt: number) => number,
  ) {}

  push(p: Pending): void {
    this.queue.push(p);
    this.dispatch();
  }

  dispatch(): void {
    while (this.queue.length > 0) {
      const member = this.pickMember();
      if (!member) return;
      const p = this.queue.shift();
      if (p) this.deliver(member, p);
    }
  }

  private pickMember(): Member | undefined {
    const n = this.members.length;
    for (let i = 0; i < n; i++) {
      const m = this.members[(this.next + i) % n];
      if (m && !m.closed && m.running.size < m.concurrency) {
        this.next = (this.next + i + 1) % n;
        return m;
      }
    }
    return undefined;
  }

  private deliver(member: Member, p: Pending): void {
    const d: Delivery = {
      topic: this.topic,
      key: p.message.key,
      body: p.message.body,
      tag: p.message.tag,
      headers: { ...p.message.headers },
      attempt: p.attempt,
    };
    member.held.add(p);
    const run = (async () => {
      try {
        await member.handler(d);
        member.held.delete(p);
      } catch {
        if (member.held.delete(p)) this.redeliverLater(p);
      }
    })();
    member.running.add(run);
    void run.finally(() => {
      member.running.delete(run);
      this.dispatch();
    });
  }

  private redeliverLater(p: Pending): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.push({ message: p.message, attempt: p.attempt + 1 });
    }, this.delay(p.attempt));
    this.timers.add(t);
  }

  /** A member left: what it still held goes back to the group, as a redelivery. */
  abandon(member: Member): void {
    for (const p of member.held) this.queue.unshift({ message: p.message, attempt: p.attempt + 1 });
    member.held.clear();
    this.dispatch();
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

/**
 * The in-process "server": topics, their groups and undelivered messages. Brokers that share
 * a bus see each other's messages, as separate clients of one real broker would.
 */
export class MemoryBus {
  readonly topics = new Map<string, Map<string, Group>>();
  /** Messages published before any group subscribed, handed to the first groups that do. */
  readonly backlog = new Map<string, Pending[]>();

  constructor(readonly redeliveryDelayMs: (attempt: number) => number = defaultDelay) {}

  stop(): void {
    for (const groups of this.topics.values()) for (const g of groups.values()) g.stop();
  }
}

export interface MemoryBrokerOptions {
  /** The bus to join. Default: a bus of its own. */
  bus?: MemoryBus;
}

export class MemoryBroker implements Broker {
  readonly kind = 'memory' as const;
  /** Nothing goes over a network: no requests to count. */
  readonly stats: BrokerStats = { requests: 0 };
  readonly bus: MemoryBus;
  private readonly ownsBus: boolean;
  private readonly subs = new Set<Subscription>();
  private closed = false;

  constructor(opts: MemoryBrokerOptions = {}) {
    this.ownsBus = opts.bus === undefined;
    this.bus = opts.bus ?? new MemoryBus();
  }

  deadLetterTopic(group: string): string {
    return `${group}.DLQ`;
  }

  ensureTopics(topics: string[]): Promise<void> {
    for (const t of topics) if (!this.bus.topics.has(t)) this.bus.topics.set(t, new Map<string, Group>());
    return Promise.resolve();
  }

  publish(topic: string, message: OutgoingMessage): Promise<void> {
    if (this.closed) return Promise.reject(new Error('memory broker is closed'));
    const groups = this.bus.topics.get(topic);
    const copy = { ...message, headers: { ...message.headers } };
    if (!groups || groups.size === 0) {
      const list = this.bus.backlog.get(topic) ?? [];
      list.push({ message: copy, attempt: 1 });
      this.bus.backlog.set(topic, list);
    } else {
      for (const g of groups.values()) g.push({ message: copy, attempt: 1 });
    }
    return Promise.resolve();
  }

  subscribe(topic: string, group: string, handler: DeliveryHandler, opts: SubscribeOptions = {}): Promise<Subscription> {
    if (this.closed) return Promise.reject(new Error('memory broker is closed'));
    let groups = this.bus.topics.get(topic);
    if (!groups) this.bus.topics.set(topic, (groups = new Map<string, Group>()));
    let g = groups.get(group);
    if (!g) {
      groups.set(group, (g = new Group(topic, this.bus.redeliveryDelayMs)));
      if (opts.fromBeginning !== false) for (const p of this.bus.backlog.get(topic) ?? []) g.queue.push({ ...p });
    }
    const grp = g;
    const member: Member = { handler, concurrency: opts.concurrency ?? 1, running: new Set(), held: new Set(), closed: false };
    grp.members.push(member);
    grp.dispatch();

    let closing: Promise<void> | undefined;
    const sub: Subscription = {
      get inFlight() {
        return member.running.size;
      },
      close: (closeOpts: CloseOptions = {}) => {
        closing ??= (async () => {
          member.closed = true;
          await drainHandlers(member.running, closeOpts.graceMs);
          grp.members.splice(grp.members.indexOf(member), 1);
          grp.abandon(member);
          this.subs.delete(sub);
        })();
        return closing;
      },
    };
    this.subs.add(sub);
    return Promise.resolve(sub);
  }

  /** Messages of the group not acknowledged yet: waiting in its queue or held by a member. */
  backlog(topic: string, group: string): Promise<number | null> {
    const g = this.bus.topics.get(topic)?.get(group);
    if (!g) return Promise.resolve(this.bus.backlog.get(topic)?.length ?? 0);
    return Promise.resolve(g.queue.length + g.members.reduce((n, m) => n + m.held.size, 0));
  }

  ping(): Promise<void> {
    return this.closed ? Promise.reject(new Error('memory broker is closed')) : Promise.resolve();
  }

  async close(opts?: CloseOptions): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.subs].map((s) => s.close(opts)));
    if (this.ownsBus) this.bus.stop();
  }
}
