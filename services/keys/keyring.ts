import { generateKeyPairSync, randomUUID } from "node:crypto";
import type { Coordinator, Lease } from "../shared/coordination/types.js";
import { seal, type MasterKeyring } from "../shared/crypto/envelope.js";
import { ExhaustedError, LeaseLostError, NotFoundError } from "../shared/errors.js";
import type { KeyringRow, KeyringStore } from "./keyring-store.js";
import { fenceRejections } from "../shared/telemetry/metrics-signing.js";
import { keyringSealContext } from "./seal-context.js";

/** A granted lease as the keyring hands it out. */
export interface KeyLeaseGrant {
  readonly keyId: string;
  readonly fence: number;
  readonly leaseId: string;
  readonly expiresAt: number;
  readonly publicKey: Buffer;
  readonly previousLastUsedAt: number;
}

/** Dependencies of the keyring domain. */
export interface KeyringDeps {
  readonly store: KeyringStore;
  readonly coordinator: Coordinator;
  readonly masterKeys: () => MasterKeyring;
  readonly now?: () => number;
  /** How many least-recently-used free keys one acquisition tries before giving up. */
  readonly candidates?: number;
}


/**
 * The signing keyring: Ed25519 keys whose private halves are stored sealed, and leases on
 * them. A lease is a Redlock lock (fast mutual exclusion) plus a fencing token from the
 * database (the final word): acquisition bumps the key's fence in the same statement that
 * records its use, and commits elsewhere are accepted only under the current fence.
 * Arguments come from requests already checked against key_management_service.proto's rules
 * (counts 1-10000, TTLs 1000-600000 ms, key ids of [A-Za-z0-9_-]{1,64}, holders 1-128 chars).
 */
export function createKeyring(deps: KeyringDeps) {
  const now = deps.now ?? Date.now;
  const held = new Map<string, Lease>();
  const resource = (keyId: string) => `keyring:${keyId}`;

  return {
    /** Creates `count` Ed25519 keys, sealing each private key under the primary master key. */
    async createKeys(count: number): Promise<KeyringRow[]> {
      const ring = deps.masterKeys();
      const rows = Array.from({ length: count }, () => {
        const id = `k-${randomUUID()}`;
        const { publicKey, privateKey } = generateKeyPairSync("ed25519");
        const pkcs8 = privateKey.export({ format: "der", type: "pkcs8" });
        const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
        return { id, publicKey: Buffer.from(raw), wrappedPrivateKey: seal(ring, pkcs8, keyringSealContext(id)), masterKeyVersion: ring.primaryVersion };
      });
      const at = now();
      await deps.store.insert(rows, at);
      return rows.map((r) => ({ ...r, fence: 0, lastUsedAt: 0, leasedUntil: 0 }));
    },

    /**
     * Leases the least-recently-used free key: tries free keys in LRU order and takes the
     * first whose lock succeeds and whose database row is still free. Contention is not an
     * error; when every key is busy the caller gets ExhaustedError and retries.
     */
    async acquire(holder: string, ttlMs: number): Promise<KeyLeaseGrant> {
      // Forget locks whose holders never came back (they expired on their own).
      for (const [id, lease] of held) if (lease.expiresAt < now()) held.delete(id);
      const candidates = await deps.store.freeCandidates(now(), deps.candidates ?? 32);
      for (const candidate of candidates) {
        const lease = await deps.coordinator.leases.tryAcquire(resource(candidate.id), ttlMs);
        if (!lease) continue;
        const grant = await deps.store.grant(candidate.id, holder, now(), ttlMs, candidate.lastUsedAt).catch(async (err: unknown) => {
          await lease.release().catch(() => undefined);
          throw err;
        });
        if (!grant) {
          await lease.release().catch(() => undefined);
          continue;
        }
        held.set(lease.value, lease);
        return { keyId: candidate.id, fence: grant.fence, leaseId: lease.value, expiresAt: lease.expiresAt, publicKey: grant.publicKey, previousLastUsedAt: grant.previousLastUsedAt };
      }
      const total = await deps.store.count();
      if (total === 0) throw new ExhaustedError("the keyring is empty: create keys first (CreateKeyringKeys)");
      throw new ExhaustedError(`all ${total} keyring keys are leased; retry shortly`);
    },

    /** Extends a lease; LeaseLostError when the lock or the fence was lost. */
    async renew(keyId: string, leaseId: string, fence: number, ttlMs: number): Promise<number> {
      const lease = held.get(leaseId);
      if (lease && lease.resource === resource(keyId)) {
        try {
          await lease.renew(ttlMs);
        } catch (err) {
          held.delete(leaseId);
          if (err instanceof LeaseLostError) {
            throw new LeaseLostError(keyId, err.reason, { message: `lease on ${keyId} was lost; abandon the batch`, cause: err });
          }
          throw err;
        }
      }
      const until = now() + ttlMs;
      if (!(await deps.store.extend(keyId, fence, now(), until))) {
        fenceRejections.add(1, { operation: "renew" });
        throw new LeaseLostError(keyId, "stale", { message: `lease on ${keyId} with fence ${fence} is no longer current; abandon the batch` });
      }
      return until;
    },

    /** Frees a lease. Returns false when it had already been lost (nothing changes then). */
    async release(keyId: string, leaseId: string, fence: number, used: boolean): Promise<boolean> {
      const lease = held.get(leaseId);
      held.delete(leaseId);
      try {
        return await deps.store.release(keyId, fence, now(), used);
      } finally {
        // The lock goes even when the database call failed: that failure may have come after
        // the release was applied (a connection lost before the reply), and a lock kept then
        // would hide a free key until its TTL. Unlocking early is safe: a grant also needs the
        // database row to be free.
        if (lease) await lease.release().catch(() => undefined);
      }
    },

    /** The sealed private key for the holder of the current lease on `keyId`. */
    async wrappedKey(keyId: string, fence: number): Promise<KeyringRow> {
      const row = await deps.store.get(keyId);
      if (!row) throw new NotFoundError(`keyring key ${keyId} does not exist`);
      if (row.fence !== fence || row.leasedUntil <= now()) {
        fenceRejections.add(1, { operation: "key_fetch" });
        throw new LeaseLostError(keyId, "stale", { message: `fence ${fence} is not the current lease on ${keyId}` });
      }
      return row;
    },

    /** One key's public data. */
    async get(keyId: string): Promise<KeyringRow> {
      const row = await deps.store.get(keyId);
      if (!row) throw new NotFoundError(`keyring key ${keyId} does not exist`);
      return row;
    },

    /** Releases every lock this process holds (shutdown). */
    async close(): Promise<void> {
      await Promise.all([...held.values()].map((l) => l.release().catch(() => undefined)));
      held.clear();
    },
  };
}

/** The keyring domain object. */
export type Keyring = ReturnType<typeof createKeyring>;
