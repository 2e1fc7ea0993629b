import { createMemoryLeases } from "./memory-leases.js";
import { createMemoryQueues } from "./memory-queues.js";
import { createMemoryTopics } from "./memory-topics.js";
import type { Coordinator } from "./types.js";

/** Options for the in-process coordinator. */
export interface MemoryCoordinatorOptions {
  /** Clock in Unix ms (default Date.now); tests can drive lease expiry with it. */
  readonly now?: () => number;
}

/**
 * Leases and queues inside this process: the embedded default (`npm start` with no Redis)
 * and the adapter for unit tests. It coordinates only what runs in the same process.
 */
export function createMemoryCoordinator(opts: MemoryCoordinatorOptions = {}): Coordinator {
  const now = opts.now ?? Date.now;
  const closing = new AbortController();
  return {
    kind: "memory",
    leases: createMemoryLeases(now),
    queues: createMemoryQueues(now, closing.signal),
    topics: createMemoryTopics(),
    async close() {
      closing.abort();
    },
  };
}
