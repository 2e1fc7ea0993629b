import { Redlock } from "@sesamecare-oss/redlock";
import { Redis, type RedisOptions } from "ioredis";
import { createRedisLeases } from "./redis-leases.js";
import { createRedisQueues } from "./redis-queues.js";
import { createRedisTopics } from "./redis-topics.js";
import type { Coordinator } from "./types.js";

/** Options for the Redis coordinator. */
export interface RedisCoordinatorOptions {
  /**
   * One `redis://` URL, or several independent nodes for a Redlock quorum (use an odd
   * number: 3 tolerates one node down). Queues use the first node.
   */
  readonly urls: readonly string[];
  /** Prefix of every key this coordinator touches (default "keymesh:"). */
  readonly keyPrefix?: string;
  /** Longest wait for any single Redis command (default 2000 ms). */
  readonly commandTimeoutMs?: number;
  /** TCP connect timeout per node (default 2000 ms). */
  readonly connectTimeoutMs?: number;
  /** Redlock clock-drift factor deducted from every lease's validity (default 0.01). */
  readonly driftFactor?: number;
  /** Told about connection errors of any node (ioredis keeps reconnecting on its own). */
  readonly onError?: (err: Error, url: string) => void;
}

/**
 * Connection behaviour chosen so that a Redis node that is down costs callers nothing:
 * no offline queue (a command to a disconnected node fails at once instead of waiting for
 * a reconnect), bounded connect and command timeouts, and background reconnection with
 * capped backoff.
 */
function clientOptions(opts: RedisCoordinatorOptions): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: opts.connectTimeoutMs ?? 2_000,
    commandTimeout: opts.commandTimeoutMs ?? 2_000,
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 2_000),
  };
}

/**
 * Resolves when `client` is ready, or has failed its first connection attempt, or after
 * `timeoutMs`: without an offline queue, commands sent before the first connect would fail.
 */
function firstAttempt(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status !== "connecting" && client.status !== "wait" && client.status !== "connect") {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      client.off("ready", done);
      client.off("error", done);
      client.off("end", done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    client.once("ready", done);
    client.once("error", done);
    client.once("end", done);
  });
}

/**
 * Leases and queues on Redis: one ioredis client per URL, Redlock over all of them with no
 * retries (tryAcquire asks once), Redis Streams on the first node.
 *
 * Redlock comes from `@sesamecare-oss/redlock`, a maintained fork with the API of redlock
 * v5: the `redlock` package on npm is stuck at 5.0.0-beta.2, whose type declarations and
 * module layout do not work with ioredis 5 under NodeNext resolution.
 */
export function createRedisCoordinator(opts: RedisCoordinatorOptions): Coordinator {
  const urls = opts.urls.map((u) => u.trim()).filter((u) => u !== "");
  if (urls.length === 0) throw new Error("createRedisCoordinator needs at least one Redis URL");
  const keyPrefix = opts.keyPrefix ?? "keymesh:";
  const options = clientOptions(opts);
  const connectTimeout = (opts.connectTimeoutMs ?? 2_000) + 500;
  const closing = new AbortController();

  const clients = urls.map((url) => {
    const client = new Redis(url, options);
    client.on("error", (err: Error) => opts.onError?.(err, url));
    return client;
  });
  const firstAttempts = new WeakMap<Redis, Promise<void>>();
  const started = (client: Redis) => {
    let p = firstAttempts.get(client);
    if (p === undefined) {
      p = firstAttempt(client, connectTimeout);
      firstAttempts.set(client, p);
    }
    return p;
  };
  for (const c of clients) void started(c);

  const redlock = new Redlock(clients, { retryCount: 0, driftFactor: opts.driftFactor ?? 0.01 });
  const leases = createRedisLeases(redlock, keyPrefix);
  const allStarted = () => Promise.all(clients.map(started)).then(() => undefined);

  const readers = new Set<Redis>();
  const queues = createRedisQueues({
    client: clients[0]!,
    keyPrefix,
    closed: closing.signal,
    started,
    openReader(blockMs: number) {
      // Blocking reads get their own connection so they never delay lease traffic.
      const reader = clients[0]!.duplicate({ commandTimeout: blockMs + (opts.commandTimeoutMs ?? 2_000) });
      reader.on("error", (err: Error) => opts.onError?.(err, urls[0]!));
      reader.once("end", () => readers.delete(reader));
      readers.add(reader);
      return reader;
    },
  });

  const topics = createRedisTopics({
    client: clients[0]!,
    keyPrefix,
    openSubscriber() {
      // Subscribers wait indefinitely for messages: no command timeout, and an offline queue
      // so a subscribe issued while reconnecting is sent once the connection is back.
      const sub = clients[0]!.duplicate({ commandTimeout: undefined, enableOfflineQueue: true });
      sub.on("error", (err: Error) => opts.onError?.(err, urls[0]!));
      return sub;
    },
  });

  let closed: Promise<void> | undefined;
  return {
    kind: "redis",
    leases: {
      async tryAcquire(resource, ttlMs) {
        await allStarted();
        return leases.tryAcquire(resource, ttlMs);
      },
    },
    queues,
    topics,
    close() {
      closed ??= (async () => {
        closing.abort();
        topics.close();
        for (const r of readers) r.disconnect();
        await Promise.all(
          clients.map(async (c) => {
            if (c.status === "ready") await c.quit().catch(() => c.disconnect());
            else c.disconnect();
          }),
        );
      })();
      return closed;
    },
  };
}
