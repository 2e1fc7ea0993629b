import { setTimeout as sleep } from "node:timers/promises";

/**
 * Runs `attempt`, and again after each of `pausesMs` in turn while what it throws is
 * `retryable`; then the last error is thrown. For idempotent work meeting a backend that is
 * briefly away (a pool reconnecting). An aborted `signal` ends the waiting with its reason.
 */
export async function withRetries<T>(
  attempt: () => Promise<T>,
  opts: { readonly pausesMs: readonly number[]; readonly retryable: (err: unknown) => boolean; readonly signal?: AbortSignal },
): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (i >= opts.pausesMs.length || opts.signal?.aborted === true || !opts.retryable(err)) throw err;
      await sleep(opts.pausesMs[i]!, undefined, opts.signal === undefined ? undefined : { signal: opts.signal });
    }
  }
}
