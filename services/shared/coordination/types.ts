/**
 * Coordination between processes: leases (mutual exclusion with expiry) and durable job
 * queues with consumer groups. One interface, two adapters: Redis (Redlock over one or
 * more nodes, Redis Streams) for production and an in-process one for the embedded default
 * and unit tests. Both have the same semantics; the tests run the same contract on both.
 */

/**
 * A held lease on one resource. It ends when released or when `expiresAt` passes without a
 * renewal. A lease is advisory: work it guards must also be fenced in the database (see the
 * fencing token in keyring_keys), because a paused process can outlive its lease.
 */
export interface Lease {
  /** The resource name as passed to `tryAcquire`. */
  readonly resource: string;
  /** Random token identifying this holder; only it can renew or release. */
  readonly value: string;
  /** Unix ms after which the holder must assume the lease is gone (clock drift already deducted). */
  readonly expiresAt: number;
  /**
   * Extends the lease to `ttlMs` from now. Throws `LeaseLostError` when the lease expired,
   * was taken over, or can no longer be confirmed (coordination backend unreachable); the
   * holder must then abandon the guarded work.
   */
  renew(ttlMs: number): Promise<void>;
  /** Gives the lease up. Best effort and idempotent: never throws; the TTL bounds a failure. */
  release(): Promise<void>;
}

/** Grants leases. */
export interface LeaseManager {
  /**
   * Tries once to take `resource` for `ttlMs` milliseconds (an integer ≥ 1). Returns null
   * when someone else holds it (contention is normal, not an error; no retry, no backoff).
   * Throws `UnavailableError` (dependency "coordination") when the backend cannot decide (no quorum reachable).
   */
  tryAcquire(resource: string, ttlMs: number): Promise<Lease | null>;
}

/** One queued entry as a handler sees it. */
export interface QueueEntry {
  /** The entry's id, unique within its queue (a Redis stream id such as "1700000000000-0"). */
  readonly id: string;
  readonly payload: Record<string, string>;
  /** True when the entry was delivered before (to a consumer that died or failed). */
  readonly redelivered: boolean;
}

/**
 * Processes one entry. Resolving acknowledges it; throwing leaves it pending, to be
 * redelivered after `idleClaimMs`. Entries can be delivered more than once (at-least-once),
 * so handlers must be idempotent.
 */
export type QueueHandler = (entry: QueueEntry) => Promise<void>;

/** How a consumer loop reads. */
export interface ConsumeOptions {
  /** Longest wait for new entries per read (default 1000 ms); bounds shutdown latency too. */
  readonly blockMs?: number;
  /**
   * Entries pending longer than this with any consumer of the group are taken over
   * (their consumer is presumed dead). Default 30 000 ms. Must exceed the longest handler run.
   */
  readonly idleClaimMs?: number;
  /** Entries fetched per read (default 10); they are handled one after another. */
  readonly count?: number;
  /** Stops the loop; the entry being handled finishes first. */
  readonly signal: AbortSignal;
  /** Told about handler failures and backend errors; the loop keeps going. */
  readonly onError?: (err: unknown, entry?: QueueEntry) => void;
}

/** Counts for one consumer group. */
export interface QueueDepth {
  /** Entries not yet delivered to any consumer of the group. */
  readonly undelivered: number;
  /** Entries delivered and not yet acknowledged. */
  readonly pending: number;
}

/** A named durable queue. */
export interface JobQueue {
  readonly name: string;
  /** Appends an entry and returns its id. */
  enqueue(payload: Record<string, string>): Promise<string>;
  /**
   * Runs a consumer named `consumer` in `group` until `opts.signal` aborts, then resolves.
   * Consumers of one group share the work; each group sees every entry. A group created
   * after entries were enqueued still receives them. Acknowledges only after `handler` resolves.
   */
  consume(group: string, consumer: string, handler: QueueHandler, opts: ConsumeOptions): Promise<void>;
  /** Entries this process's consumers of this queue hold right now (delivered, not yet acknowledged). */
  pending(): number;
  /** Undelivered and pending counts for `group`, across every process. */
  depth(group: string): Promise<QueueDepth>;
}

/** Named queues. */
export interface JobQueues {
  /** The queue called `name` (the same object for the same name). */
  queue(name: string): JobQueue;
}

/**
 * Fire-and-forget notifications between processes (Redis PUBLISH/SUBSCRIBE, or in-process).
 * At-most-once, only to current subscribers: for "something happened" signals whose data
 * lives elsewhere, like a new message in an inbox.
 */
export interface Topics {
  publish(topic: string, message: string): Promise<void>;
  /** Calls `listener` for every message published on `topic` until the returned function runs. */
  subscribe(topic: string, listener: (message: string) => void): Promise<() => Promise<void>>;
}

/** Leases, queues and topics behind one handle. */
export interface Coordinator {
  readonly leases: LeaseManager;
  readonly queues: JobQueues;
  readonly topics: Topics;
  /** "redis" or "memory", for logs and health output. */
  readonly kind: "redis" | "memory";
  /** Stops consumer loops' connections and closes clients; safe to call more than once. */
  close(): Promise<void>;
}
