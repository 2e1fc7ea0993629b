import type { Redis } from "ioredis";

/**
 * Counting failed logins per username and per peer address in fixed windows. With Redis the
 * counters are shared, so a guesser gains nothing by spreading attempts over auth processes.
 */

/** How many failures a key may collect within a window. */
export interface LimitRule {
  readonly maxFailures: number;
  readonly windowMs: number;
}

/** The default rules: 10 failures per username and 100 per peer address in 15 minutes. */
export const DEFAULT_LIMITS = {
  username: { maxFailures: 10, windowMs: 15 * 60_000 },
  peer: { maxFailures: 100, windowMs: 15 * 60_000 },
} as const satisfies Record<string, LimitRule>;

/** Failure counters by key. */
export interface FailureCounter {
  /** Adds a failure to a key and returns its count in the current window. */
  add(key: string, windowMs: number, now: number): Promise<number>;
  /** The key's count and the milliseconds until its window ends (0, 0 when none). */
  read(key: string, now: number): Promise<{ count: number; remainingMs: number }>;
  /** Forgets a key (a successful login clears its username's count). */
  clear(key: string): Promise<void>;
}

// INCR, and start the window on the first failure: one round trip, atomic.
const ADD_SCRIPT = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;

/** Counters in Redis, shared by every auth process. */
export function createRedisFailureCounter(redis: Redis, prefix: string): FailureCounter {
  const full = (key: string) => `${prefix}auth:failures:${key}`;
  return {
    async add(key, windowMs) {
      return Number(await redis.eval(ADD_SCRIPT, 1, full(key), String(windowMs)));
    },
    async read(key) {
      const [[, count], [, ttl]] = (await redis.multi().get(full(key)).pttl(full(key)).exec()) as [[unknown, string | null], [unknown, number]];
      return { count: Number(count ?? 0), remainingMs: Math.max(0, ttl) };
    },
    async clear(key) {
      await redis.del(full(key));
    },
  };
}

/** Counters in this process only (the embedded default). */
export function createMemoryFailureCounter(): FailureCounter {
  const counts = new Map<string, { count: number; endsAt: number }>();
  const live = (key: string, now: number) => {
    const entry = counts.get(key);
    if (entry !== undefined && entry.endsAt <= now) counts.delete(key);
    return entry !== undefined && entry.endsAt > now ? entry : undefined;
  };
  return {
    async add(key, windowMs, now) {
      const entry = live(key, now) ?? { count: 0, endsAt: now + windowMs };
      entry.count++;
      counts.set(key, entry);
      return entry.count;
    },
    async read(key, now) {
      const entry = live(key, now);
      return entry === undefined ? { count: 0, remainingMs: 0 } : { count: entry.count, remainingMs: entry.endsAt - now };
    },
    async clear(key) {
      counts.delete(key);
    },
  };
}
