import { generateKeyPairSync, randomUUID } from "node:crypto";
import { hashLeaseId, leaseIdMatches, newLeaseId, type LeaseTokens } from "../shared/crypto/lease-token.js";
import type { Coordinator, Lease } from "../shared/coordination/types.js";
import { seal, type MasterKeyring } from "../shared/crypto/envelope.js";
import { ExhaustedError, LeaseLostError, NotFoundError } from "../shared/errors.js";
import type { KeyringRow, KeyringStore } from "./keyring-store.js";
import { fenceRejections } from "../shared/telemetry/metrics-signing.js";
import { keyringSealContext } from "./seal-context.js";

/** A granted lease as the keyring hands it out. */
export interface KeyLeaseGrant {
  readonly keyId: string;
  readonly fence: bigint;
  /** The lease's secret id: returned only here, stored only hashed. */
  readonly leaseId: string;
  readonly leaseToken: string;
  readonly expiresAt: number;
  readonly publicKey: Buffer;
  readonly previousLastUsedAt: number;
}

/** Dependencies of the keyring domain. */
export interface KeyringDeps {
  readonly store: KeyringStore;
  readonly coordinator: Coordinator;
  readonly masterKeys: () => MasterKeyring;
  /** Mints the lease tokens signing and collection check. */
  readonly tokens: LeaseTokens;
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

  /** Whether `leaseId` and `fence` name the key's current lease (hash compared in constant time). */
  const holds = (row: KeyringRow, leaseId: string, fence: bigint) => BigInt(row.fence) === fence && leaseIdMatches(leaseId, row.leaseHash);

  /** The key's row when the caller holds its current lease; LeaseLostError otherwise. */
  async function currentLease(keyId: string, leaseId: string, fence: bigint): Promise<KeyringRow> {
    const row = await deps.store.get(keyId);
    if (!row) throw new NotFoundError(`keyring key ${keyId} does not exist`);
    // One answer for a wrong fence and a wrong lease id: nothing tells a guesser which was off.
    if (!holds(row, leaseId, fence)) {
      throw new LeaseLostError(keyId, "stale", { message: `lease id and fence ${fence} are not the current lease on ${keyId}` });
    }
    return row;
  }

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
        const leaseId = newLeaseId();
        const leaseHash = hashLeaseId(leaseId);
        const at = now();
        const grant = await deps.store.grant(candidate.id, holder, at, ttlMs, candidate.lastUsedAt, leaseHash).catch(async (err: unknown) => {
          await lease.release().catch(() => undefined);
          throw err;
        });
        if (!grant) {
          await lease.release().catch(() => undefined);
          continue;
        }
        held.set(leaseHash.toString("hex"), lease);
        const fence = BigInt(grant.fence);
        const expiresAt = at + ttlMs;
        const leaseToken = deps.tokens.mint({ keyId: candidate.id, fence, leaseHash, expiresAt });
        return { keyId: candidate.id, fence, leaseId, leaseToken, expiresAt, publicKey: grant.publicKey, previousLastUsedAt: grant.previousLastUsedAt };
      }
      const total = await deps.store.count();
      if (total === 0) throw new ExhaustedError("the keyring is empty: create keys first (CreateKeyringKeys)");
      throw new ExhaustedError(`all ${total} keyring keys are leased; retry shortly`);
    },

    /**
     * Extends a lease and returns its new expiry and token; LeaseLostError when the lease id
     * is not the key's current lease, or the lock or the lease was lost.
     */
    async renew(keyId: string, leaseId: string, fence: bigint, ttlMs: number): Promise<{ expiresAt: number; leaseToken: string }> {
      const row = await currentLease(keyId, leaseId, fence);
      const leaseHash = hashLeaseId(leaseId);
      const lease = held.get(leaseHash.toString("hex"));
      if (lease && lease.resource === resource(keyId)) {
        try {
          await lease.renew(ttlMs);
        } catch (err) {
          held.delete(leaseHash.toString("hex"));
          if (err instanceof LeaseLostError) {
            throw new LeaseLostError(keyId, err.reason, { message: `lease on ${keyId} was lost; abandon the batch`, cause: err });
          }
          throw err;
        }
      }
      const until = now() + ttlMs;
      // Conditional on the fence: the hash matched the row read just now, and only a new
      // grant (which moves the fence) replaces it.
      if (!(await deps.store.extend(keyId, row.fence, now(), until))) {
        fenceRejections.add(1, { operation: "renew" });
        throw new LeaseLostError(keyId, "stale", { message: `lease on ${keyId} with fence ${fence} is no longer current; abandon the batch` });
      }
      return { expiresAt: until, leaseToken: deps.tokens.mint({ keyId, fence, leaseHash, expiresAt: until }) };
    },

    /** Frees a lease. Returns false when it had already been lost (nothing changes then). */
    async release(keyId: string, leaseId: string, fence: bigint, used: boolean): Promise<boolean> {
        const row = await deps.store.get(keyId);
      if (!row || !holds(row, leaseId, fence)) return false;
      const hex = hashLeaseId(leaseId).toString("hex");
      const lease = held.get(hex);
      held.delete(hex);
      try {
        return await deps.store.release(keyId, row.fence, now(), used);
      } finally {
        // The lock goes even when the database call failed: that failure may have come after
        // the release was applied (a connection lost before the reply), and a lock kept then
        // would hide a free key until its TTL. Unlocking early is safe: a grant also needs the
        // database row to be free.
        if (lease) await lease.release().catch(() => undefined);
      }
    },

    /** The sealed private key, for the holder of the current live lease on `keyId` only. */
    async wrappedKey(keyId: string, leaseId: string, fence: bigint): Promise<KeyringRow> {
      const row = await currentLease(keyId, leaseId, fence);
      if (row.leasedUntil <= now()) {
        fenceRejections.add(1, { operation: "key_fetch" });
        throw new LeaseLostError(keyId, "expired", { message: `the lease on ${keyId} with fence ${fence} has lapsed` });
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
