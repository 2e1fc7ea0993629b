import { setTimeout } from "node:timers/promises";
import { assertPayload, CONSUME_DEFAULTS } from "./common.js";
import type { ConsumeOptions, JobQueue, JobQueues, QueueDepth, QueueEntry, QueueHandler } from "./types.js";

interface Stored {
  readonly id: string;
  readonly payload: Readonly<Record<string, string>>;
}

interface Delivery {
  readonly entry: Stored;
  consumer: string;
  deliveredAt: number;
  deliveries: number;
}

interface Group {
  /** Index into the entries of the next never-delivered entry. */
  next: number;
  /** Delivered, not yet acknowledged, by entry id (insertion order = id order). */
  readonly pending: Map<string, Delivery>;
}

/**
 * An in-process queue with the semantics of a Redis Stream and consumer groups: every group
 * sees every entry (also entries enqueued before it existed), consumers of one group share
 * them, entries stay pending until acknowledged, and entries idle longer than `idleClaimMs`
 * move to another consumer. Entries are kept for the life of the process.
 */
function createMemoryQueue(name: string, now: () => number, closed: AbortSignal | undefined): JobQueue {
  const entries: Stored[] = [];
  const groups = new Map<string, Group>();
  const waiters = new Set<() => void>();
  let lastMs = 0;
  let seq = 0;
  let inFlight = 0;

  function nextId(): string {
    const t = now();
    if (t > lastMs) {
      lastMs = t;
      seq = 0;
    } else {
      seq++;
    }
    return `${lastMs}-${seq}`;
  }

  function group(groupName: string): Group {
    let g = groups.get(groupName);
    if (g === undefined) {
      g = { next: 0, pending: new Map() };
      groups.set(groupName, g);
    }
    return g;
  }

  function wake(): void {
    for (const w of [...waiters]) w();
  }

  function waitForEntries(ms: number, signal: AbortSignal): Promise<void> {
    const inner = new AbortController();
    const stop = () => inner.abort();
    waiters.add(stop);
    signal.addEventListener("abort", stop, { once: true });
    // Resolves after `ms`, or at once when an entry arrives or `signal` aborts.
    return setTimeout(ms, undefined, { signal: inner.signal }).catch(() => undefined).finally(() => {
      waiters.delete(stop);
      signal.removeEventListener("abort", stop);
    });
  }

  /** Hands `d` to `consumer` again (a leftover of its own, or taken over from an idle one). */
  function redeliver(d: Delivery, consumer: string): Delivery {
    d.consumer = consumer;
    d.deliveredAt = now();
    d.deliveries++;
    return d;
  }

  /** The next delivery for `consumer`: entries idle with any consumer first, then new ones. */
  function take(g: Group, consumer: string, idleClaimMs: number): Delivery | undefined {
    const t = now();
    for (const d of g.pending.values()) {
      if (t - d.deliveredAt >= idleClaimMs) return redeliver(d, consumer);
    }
    if (g.next >= entries.length) return undefined;
    const entry = entries[g.next++]!;
    const d: Delivery = { entry, consumer, deliveredAt: t, deliveries: 1 };
    g.pending.set(entry.id, d);
    return d;
  }

  return {
    name,
    async enqueue(payload) {
      assertPayload(payload);
      const entry: Stored = { id: nextId(), payload: Object.freeze({ ...payload }) };
      entries.push(entry);
      wake();
      return entry.id;
    },

    async consume(groupName: string, consumer: string, handler: QueueHandler, opts: ConsumeOptions) {
      const blockMs = opts.blockMs ?? CONSUME_DEFAULTS.blockMs;
      const idleClaimMs = opts.idleClaimMs ?? CONSUME_DEFAULTS.idleClaimMs;
      const g = group(groupName);
      const signal = closed === undefined ? opts.signal : AbortSignal.any([opts.signal, closed]);
      // Entries a previous loop of the same consumer name left unacknowledged come first.
      const leftovers = [...g.pending.values()].filter((d) => d.consumer === consumer);
      while (!signal.aborted) {
        let d: Delivery | undefined;
        while (d === undefined && leftovers.length > 0) {
          const l = leftovers.shift()!;
          if (g.pending.get(l.entry.id) === l && l.consumer === consumer) d = redeliver(l, consumer);
        }
        d ??= take(g, consumer, idleClaimMs);
        if (d === undefined) {
          await waitForEntries(blockMs, signal);
          continue;
        }
        const entry: QueueEntry = { id: d.entry.id, payload: { ...d.entry.payload }, redelivered: d.deliveries > 1 };
        inFlight++;
        try {
          await handler(entry);
          g.pending.delete(entry.id);
        } catch (err) {
          opts.onError?.(err, entry);
        } finally {
          inFlight--;
        }
      }
    },

    pending: () => inFlight,

    async depth(groupName: string): Promise<QueueDepth> {
      const g = groups.get(groupName);
      if (g === undefined) return { undelivered: entries.length, pending: 0 };
      return { undelivered: entries.length - g.next, pending: g.pending.size };
    },
  };
}

/** In-process named queues; consumer loops also stop when `closed` aborts. */
export function createMemoryQueues(now: () => number = Date.now, closed?: AbortSignal): JobQueues {
  const queues = new Map<string, JobQueue>();
  return {
    queue(name: string) {
      let q = queues.get(name);
      if (q === undefined) {
        q = createMemoryQueue(name, now, closed);
        queues.set(name, q);
      }
      return q;
    },
  };
}
