import { generateKeyPairSync, randomUUID } from "node:crypto";
import { hashLeaseId, leaseIdMatches, newLeaseId, type LeaseTokens } from "../shared/crypto/lease-token.js";
import type { Coordinator, Lease } from "../shared/coordination/types.js";
import { seal, type MasterKeyring } from "../shared/crypto/envelope.js";
import { ExhaustedError, LeaseLostError, NotFoundError } from "../shared/errors.js";
import { isDeadlock } from "../shared/storage/errors.js";
import type { FreeKey, KeyringRow, KeyringStore, PendingGrant } from "./keyring-store.js";
import { fenceRejections } from "../shared/telemetry/metrics-signing.js";
import { keyringSealContext } from "./seal-context.js";

/** Runs of a grant transaction the database may end as a deadlock victim before the error stands. */
const DEADLOCK_ATTEMPTS = 4;

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
  /** The key's sealed private key: handed to the holder, who passes it on to signing. */
  readonly sealedPrivateKey: Buffer;
}

/** Dependencies of the keyring domain. */
export interface KeyringDeps {
  readonly store: KeyringStore;
  readonly coordinator: Coordinator;
  readonly masterKeys: () => MasterKeyring;
  /** Mints the lease tokens signing and collection check. */
  readonly tokens: LeaseTokens;
  readonly now?: () => number;
  /**
   * How many keys one grant tries to lock before giving up. The database hands each grant a
   * key no other grant holds, so the first lock normally succeeds; a refusal means a stale
   * lock (say of a process that crashed between locking and committing), and the grant moves
   * on to the next key.
   */
  readonly lockAttempts?: number;
}

/** What a grant transaction produced: the key, its new fence and its lock. */
interface Granted {
  readonly key: FreeKey;
  readonly fence: number;
  readonly at: number;
  readonly lock: Lease;
}

/** Fences are int64 on the wire; the store keeps them as numbers, so a larger one is nobody's. */
const storedFence = (fence: bigint): number | undefined => (fence > 0n && fence <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(fence) : undefined);

/**
 * The signing keyring: Ed25519 keys whose private halves are stored sealed, and leases on
 * them. A lease is a Redlock lock (fast mutual exclusion) plus a fencing token from the
 * database (the final word): the grant transaction locks the least-recently-used free key,
 * takes its lock and bumps its fence, and commits elsewhere are accepted only under the
 * current fence.
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

  /** Drops locks whose holders never came back (they expired on their own). */
  function forgetExpiredLocks(): void {
    for (const [id, lease] of held) if (lease.expiresAt < now()) held.delete(id);
  }


  /**
   * Runs a release (`run`), letting the lease's lock go first when this process holds it (the
   * caller knows the lease id). Lock first, row second: released after the row, the lock
   * would still be held when a concurrent grant found the row free, and that grant would skip
   * the least recently used key. Dropping it first is safe: a grant also needs the key's row
   * to be free, and the row is the final word. If the release then fails or is refused, the
   * lease stands in the database, unlocked, until it is released or lapses.
   */
  async function releasing<T>(keyId: string, leaseId: string, run: (leaseHash: Buffer) => Promise<T>): Promise<T> {
    const leaseHash = hashLeaseId(leaseId);
    const hex = leaseHash.toString("hex");
    const lock = held.get(hex);
    if (lock && lock.resource === resource(keyId)) {
      held.delete(hex);
      await lock.release().catch(() => undefined);
    }
    return run(leaseHash);
  }

  /**
   * A new lease on the least-recently-used free key not in `exclude`, or undefined when none
   * is free. The grant's transaction locks the key's row and writes the lease; with the row
   * still locked, the key's lock is taken, and only then does the grant commit. A key whose
   * lock is refused (stale: say of a process that crashed holding it) is rolled back, leaving
   * no trace, and skipped, up to `lockAttempts` keys.
   */
  async function grantNext(holder: string, ttlMs: number, leaseHash: Buffer, exclude: readonly string[]): Promise<Granted | undefined> {
    const skipped = [...exclude];
    for (let attempt = 0; attempt < (deps.lockAttempts ?? 4); attempt++) {
      let lock: Lease | undefined;
      let refused: string | undefined;
      // The lock's TTL runs from the grant's date (see KeyringStore.grant: after the release
      // that freed the key), so lock and lease lapse together.
      const takeLock = async (pending: PendingGrant) => {
        lock = (await deps.coordinator.leases.tryAcquire(resource(pending.key.id), Math.max(1, pending.at + ttlMs - now()))) ?? undefined;
        if (!lock) refused = pending.key.id;
        return lock !== undefined;
      };
      const letGo = async () => {
        await lock?.release().catch(() => undefined);
        lock = undefined;
      };
      const granted = await deadlockRetried(() => deps.store.grant({ holder, ttlMs, leaseHash, exclude: skipped, clock: now }, takeLock), letGo);
      if (granted) return { ...granted, lock: lock! };
      if (refused === undefined) return undefined;
      skipped.push(refused);
    }
    return undefined;
  }

  /**
   * Runs a grant again when the database ended it as a deadlock victim (concurrent grants and
   * releases lock key rows in different orders now and then): nothing of it remained. After
   * any failure `letGo` gives back a lock taken for it, which without its row would hide a
   * free key.
   */
  async function deadlockRetried<T>(grant: () => Promise<T>, letGo: () => Promise<void>): Promise<T> {
    for (let run = 1; ; run++) {
      try {
        return await grant();
      } catch (err) {
        await letGo();
        if (!isDeadlock(err) || run >= DEADLOCK_ATTEMPTS) throw err;
      }
    }
  }

  /** The grant as the caller receives it, once its transaction committed. */
  function finish(granted: Granted, leaseId: string, leaseHash: Buffer, ttlMs: number): KeyLeaseGrant {
    held.set(leaseHash.toString("hex"), granted.lock);
    const fence = BigInt(granted.fence);
    const expiresAt = granted.at + ttlMs;
    const leaseToken = deps.tokens.mint({ keyId: granted.key.id, fence, leaseHash, expiresAt, publicKey: granted.key.publicKey });
    const { key } = granted;
    return { keyId: key.id, fence, leaseId, leaseToken, expiresAt, publicKey: key.publicKey, previousLastUsedAt: key.lastUsedAt, sealedPrivateKey: key.wrappedPrivateKey };
  }

  /** Why no key could be granted. */
  async function exhausted(): Promise<ExhaustedError> {
    const total = await deps.store.count();
    if (total === 0) return new ExhaustedError("the keyring is empty: create keys first (CreateKeyringKeys)");
    return new ExhaustedError(`all ${total} keyring keys are leased; retry shortly`);
  }

  /** A new lease on the least-recently-used free key not in `exclude`; undefined when none is free. */
  async function grant(holder: string, ttlMs: number, exclude: readonly string[]): Promise<KeyLeaseGrant | undefined> {
    const leaseId = newLeaseId();
    const leaseHash = hashLeaseId(leaseId);
    const granted = await grantNext(holder, ttlMs, leaseHash, exclude);
    return granted && finish(granted, leaseId, leaseHash, ttlMs);
  }

  /** Frees a lease. Returns false when it had already been lost (nothing changes then). */
  async function release(keyId: string, leaseId: string, fence: bigint, used: boolean): Promise<boolean> {
    const stored = storedFence(fence);
    if (stored === undefined) return false;
    return releasing(keyId, leaseId, (hash) => deps.store.release(keyId, hash, stored, now, used));
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
     * Leases the least-recently-used free key. Contention is not an error: concurrent callers
     * are handed different keys; when every key is busy the caller gets ExhaustedError and retries.
     */
    async acquire(holder: string, ttlMs: number): Promise<KeyLeaseGrant> {
      forgetExpiredLocks();
      return (await grant(holder, ttlMs, [])) ?? Promise.reject(await exhausted());
    },

    /**
     * Releases the caller's lease exactly as `release` does (a wrong lease id or fence releases
     * nothing), then leases the least-recently-used free key other than that one: what an
     * executor does between batches, in one call. The release comes first, visible to every
     * grant the moment it is dated (held back in the grant's transaction it would look, to
     * anyone replaying the history, like a free key passed over). `grant` is undefined when
     * every other key is busy; the release stands all the same.
     */
    async rotate(
      keyId: string,
      leaseId: string,
      fence: bigint,
      used: boolean,
      holder: string,
      ttlMs: number,
    ): Promise<{ released: boolean; grant: KeyLeaseGrant | undefined }> {
      forgetExpiredLocks();
      const released = await release(keyId, leaseId, fence, used);
      return { released, grant: await grant(holder, ttlMs, [keyId]) };
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
      return { expiresAt: until, leaseToken: deps.tokens.mint({ keyId, fence, leaseHash, expiresAt: until, publicKey: row.publicKey }) };
    },

    /** Frees a lease (see `release` above). */
    release,

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
