import { assertTtl, leaseValue } from "./common.js";
import { LeaseLostError } from "../errors.js";
import type { Lease, LeaseManager } from "./types.js";

interface Held {
  value: string;
  expiresAt: number;
}

/**
 * In-process leases: a map from resource to (value, expiry). Same semantics as the Redis
 * adapter — try-once acquisition, expiry frees the resource, only the holder's value can
 * renew or release — for the embedded default and unit tests.
 */
export function createMemoryLeases(now: () => number = Date.now): LeaseManager {
  const held = new Map<string, Held>();

  function sweep(t: number): void {
    if (held.size < 1024) return;
    for (const [resource, h] of held) if (h.expiresAt <= t) held.delete(resource);
  }

  function lease(resource: string, value: string, initialExpiry: number): Lease {
    let expiresAt = initialExpiry;
    return {
      resource,
      value,
      get expiresAt() {
        return expiresAt;
      },
      async renew(ttlMs: number) {
        assertTtl(ttlMs);
        const t = now();
        if (expiresAt <= t) throw new LeaseLostError(resource, "expired");
        const current = held.get(resource);
        if (current === undefined || current.value !== value || current.expiresAt <= t) {
          expiresAt = 0;
          throw new LeaseLostError(resource, "taken");
        }
        current.expiresAt = t + ttlMs;
        expiresAt = current.expiresAt;
      },
      async release() {
        expiresAt = 0;
        if (held.get(resource)?.value === value) held.delete(resource);
      },
    };
  }

  return {
    async tryAcquire(resource: string, ttlMs: number) {
      assertTtl(ttlMs);
      const t = now();
      const current = held.get(resource);
      if (current !== undefined && current.expiresAt > t) return null;
      sweep(t);
      const entry = { value: leaseValue(), expiresAt: t + ttlMs };
      held.set(resource, entry);
      return lease(resource, entry.value, entry.expiresAt);
    },
  };
}
