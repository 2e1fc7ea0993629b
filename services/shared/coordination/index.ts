import { createMemoryCoordinator } from "./memory.js";
import { createRedisCoordinator } from "./redis.js";
import type { Coordinator } from "./types.js";

export type {
  ConsumeOptions,
  Coordinator,
  JobQueue,
  JobQueues,
  Lease,
  LeaseManager,
  QueueDepth,
  QueueEntry,
  QueueHandler,
} from "./types.js";
export { LeaseLostError, UnavailableError, type LeaseLossReason } from "../errors.js";
export { createMemoryCoordinator, type MemoryCoordinatorOptions } from "./memory.js";
export { createRedisCoordinator, type RedisCoordinatorOptions } from "./redis.js";

/** How to coordinate: Redis when URLs are given, in-process otherwise. */
export interface CoordinatorConfig {
  /** KEYMESH_REDIS_URL: one `redis://…` URL or a comma-separated list (a Redlock quorum). */
  readonly redisUrl?: string | readonly string[];
  /** Prefix of every Redis key (default "keymesh:"). */
  readonly keyPrefix?: string;
  /** Told about Redis connection errors. */
  readonly onError?: (err: Error, url: string) => void;
}

/** Splits KEYMESH_REDIS_URL's value (or a list) into URLs, dropping blanks. */
export function parseRedisUrls(value: string | readonly string[] | undefined): string[] {
  const parts = typeof value === "string" ? value.split(",") : [...(value ?? [])];
  return parts.map((u) => u.trim()).filter((u) => u !== "");
}

/** Chooses the adapter by configuration: Redis for one or more URLs, else in-process. */
export function createCoordinator(config: CoordinatorConfig = {}): Coordinator {
  const urls = parseRedisUrls(config.redisUrl);
  if (urls.length === 0) return createMemoryCoordinator();
  return createRedisCoordinator({
    urls,
    ...(config.keyPrefix === undefined ? {} : { keyPrefix: config.keyPrefix }),
    ...(config.onError === undefined ? {} : { onError: config.onError }),
  });
}
