import { ExecutionError, type Lock, type Redlock } from "@sesamecare-oss/redlock";
import { assertTtl } from "./common.js";
import { redlockSpan } from "../telemetry/redis-spans.js";
import { LeaseLostError, UnavailableError } from "../errors.js";
import type { Lease, LeaseManager } from "./types.js";

/**
 * Leases as Redlock locks over every configured Redis node (quorum = majority).
 *
 * Redlock reports both "held by someone else" and "nodes unreachable" as one
 * `ExecutionError`; the votes tell them apart. A node that answered "already locked" voted
 * with a `ResourceLockedError`; any other vote against is a node we could not use. If the
 * nodes we could use are fewer than a quorum, nobody can decide: UnavailableError.
 * Otherwise the resource is held elsewhere: null.
 */

interface Verdict {
  /** Too few nodes answered to reach a quorum either way. */
  readonly unreachable: boolean;
  /** The first connectivity error, for the error's cause. */
  readonly cause: unknown;
}

/** Reads the final votes of a failed Redlock operation (waits until every node answered). */
async function verdict(err: ExecutionError): Promise<Verdict> {
  const last = err.attempts.at(-1);
  if (last === undefined) return { unreachable: false, cause: err };
  const stats = await last;
  let down = 0;
  let cause: unknown = err;
  for (const vote of stats.votesAgainst.values()) {
    if (vote.name === "ResourceLockedError") continue;
    if (down === 0) cause = vote;
    down++;
  }
  return { unreachable: stats.membershipSize - down < stats.quorumSize, cause };
}

/** Builds the LeaseManager over a Redlock whose settings have `retryCount: 0`. */
export function createRedisLeases(redlock: Redlock, keyPrefix: string): LeaseManager {
  const keyOf = (resource: string) => `${keyPrefix}lease:${resource}`;

  function lease(resource: string, first: Lock): Lease {
    let lock = first;
    let expiresAt = first.expiration;
    return {
      resource,
      value: first.value,
      get expiresAt() {
        return expiresAt;
      },
      async renew(ttlMs: number) {
        assertTtl(ttlMs);
        if (expiresAt <= Date.now()) throw new LeaseLostError(resource, "expired");
        try {
          lock = await redlockSpan("extend", { "keymesh.lease.resource": resource }, () => lock.extend(ttlMs));
          expiresAt = lock.expiration;
        } catch (err) {
          if (!(err instanceof ExecutionError)) throw err;
          const expired = expiresAt <= Date.now();
          const v = await verdict(err);
          expiresAt = 0;
          const reason = expired ? "expired" : v.unreachable ? "unavailable" : "taken";
          throw new LeaseLostError(resource, reason, { cause: v.cause });
        }
      },
      async release() {
        expiresAt = 0;
        // Best effort: the value-checked script deletes only our own entry; a node we cannot
        // reach lets it expire with its TTL.
        await redlockSpan("release", { "keymesh.lease.resource": resource }, () => redlock.release(lock)).catch(() => undefined);
      },
    };
  }

  return {
    async tryAcquire(resource: string, ttlMs: number) {
      assertTtl(ttlMs);
      return redlockSpan("acquire", { "keymesh.lease.resource": resource }, async (span) => {
        let lock: Lock;
        try {
          lock = await redlock.acquire([keyOf(resource)], ttlMs);
        } catch (err) {
          if (!(err instanceof ExecutionError)) throw err;
          const v = await verdict(err);
          if (!v.unreachable) {
            // Held by someone else: the answer, not a failure.
            span.setAttribute("keymesh.lease.outcome", "held");
            return null;
          }
          throw new UnavailableError("coordination", `cannot reach a quorum of Redis nodes to lease ${resource}`, {
            cause: v.cause,
          });
        }
        if (lock.expiration <= Date.now()) {
          // The quorum answered so slowly that the lease ran out on the way back.
          await redlock.release(lock).catch(() => undefined);
          throw new UnavailableError("coordination", `Redis answered too slowly to lease ${resource} for ${ttlMs} ms`);
        }
        span.setAttribute("keymesh.lease.outcome", "acquired");
        return lease(resource, lock);
      });
    },
  };
}
