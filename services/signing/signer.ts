import type { KeyObject } from "node:crypto";
import { ed25519PrivateKeyFromPkcs8 } from "../shared/crypto/ed25519.js";
import { open, type MasterKeyring } from "../shared/crypto/envelope.js";
import { checkLease, type LeaseTokens } from "../shared/crypto/lease-token.js";
import { LeaseLostError } from "../shared/errors.js";
import { keyringSealContext } from "../keys/seal-context.js";
import type { SignPool } from "./sign-pool.js";

/** A sealed signing key as the key service hands it to the lease holder. */
export interface WrappedSigningKey {
  readonly keyId: string;
  readonly wrapped: Uint8Array;
}

/** Fetches the sealed private key under a lease (the key service checks lease id and fence). */
export type WrappedKeySource = (keyId: string, fence: bigint, leaseId: string) => Promise<WrappedSigningKey>;

/** What a batch presents to prove its lease. */
export interface LeaseCredentials {
  readonly keyId: string;
  readonly fence: bigint;
  readonly leaseId: string;
  readonly leaseToken: string;
}

/**
 * The signer. Every batch must present a live lease: a lease token the key service MAC'd for
 * (key, fence, lease id hash, expiry), the lease id that hashes to it, and an expiry still
 * ahead; a lapsed or forged lease is refused (Aborted) before any key is touched. The key
 * service hands the sealed key only to a lease holder: with the lease itself (the executor
 * passes it on with the batch) or, for a caller that does not, through GetWrappedSigningKey
 * the first time a key is needed. Either way it opens only with the master key and only for
 * the key id it was sealed for. The opened KeyObject is then kept per key id (bounded, least
 * recently used first out), as every later batch again proves a lease the key service
 * granted. The private key never leaves this object and the signing pool's threads: not in
 * logs, errors or replies.
 */
export function createSigner(deps: {
  source: WrappedKeySource;
  masterKeys: () => MasterKeyring;
  tokens: LeaseTokens;
  /** The threads that sign (sign-pool.ts); the signer only checks leases and opens keys. */
  pool: Pick<SignPool, "sign">;
  now?: () => number;
  maxCachedKeys?: number;
}) {
  const cache = new Map<string, Promise<KeyObject>>();
  /** The newest fence seen per key: a lease is over once a newer one of its key signs. */
  const newest = new Map<string, bigint>();
  const limit = deps.maxCachedKeys ?? 512;
  const now = deps.now ?? Date.now;

  /** Opens a sealed key of `keyId` (the seal is bound to the key id). */
  function opened(keyId: string, sealed: Uint8Array): KeyObject {
    const der = open(deps.masterKeys(), sealed, keyringSealContext(keyId));
    try {
      return ed25519PrivateKeyFromPkcs8(der);
    } finally {
      der.fill(0);
    }
  }

  /**
   * The batch's key: cached, else opened from the sealed key the lease came with, else
   * fetched from the key service. A sealed key that does not open (sealed for another key id,
   * under a master-key version this process does not have, or damaged) is not an error of its
   * own: the key service is asked, and it answers only the lease's holder.
   */
  function keyFor(lease: LeaseCredentials, sealed?: Uint8Array): Promise<KeyObject> {
    const hit = cache.get(lease.keyId);
    if (hit) {
      cache.delete(lease.keyId);
      cache.set(lease.keyId, hit);
      return hit;
    }
    const fetch = () => deps.source(lease.keyId, lease.fence, lease.leaseId).then((w) => opened(lease.keyId, w.wrapped));
    let key: Promise<KeyObject>;
    try {
      key = sealed !== undefined && sealed.length > 0 ? Promise.resolve(opened(lease.keyId, sealed)) : fetch();
    } catch {
      key = fetch();
    }
    cache.set(lease.keyId, key);
    key.catch(() => {
      if (cache.get(lease.keyId) === key) cache.delete(lease.keyId);
    });
    if (cache.size > limit) cache.delete(cache.keys().next().value!);
    return key;
  }

  /** Refuses a batch whose lease is not live and held by the caller. */
  function checkCredentials(lease: LeaseCredentials): void {
    const { problem } = checkLease(deps.tokens, lease, now());
    if (problem) throw new LeaseLostError(lease.keyId, "stale", { message: `${problem}; acquire a lease and sign under it` });
    // A newer lease of the key exists only once this one lapsed or was released.
    const seen = newest.get(lease.keyId) ?? 0n;
    if (lease.fence < seen) {
      throw new LeaseLostError(lease.keyId, "taken", { message: `the lease on ${lease.keyId} with fence ${lease.fence} ended: fence ${seen} is newer` });
    }
    newest.delete(lease.keyId);
    newest.set(lease.keyId, lease.fence);
    if (newest.size > limit * 4) newest.delete(newest.keys().next().value!);
  }

  return {
    /**
     * Signs every payload with the key of `lease`, if that lease is live and the caller's, and
     * returns the signatures concatenated (64 bytes each, in order). `sealed` is the lease's
     * sealed key, when the caller passed it on. The batch's limits (1-10000 items of at most
     * 1024 bytes, a positive fence, a lease id and token) are signing_service.proto's rules,
     * checked before a batch gets here.
     */
    async signBatch(lease: LeaseCredentials, payloads: readonly Uint8Array[], sealed?: Uint8Array): Promise<Buffer> {
      checkCredentials(lease);
      const key = await keyFor(lease, sealed);
      // Off the event loop, on every core: the pool's threads sign the batch in chunks.
      return deps.pool.sign(key, payloads);
    },

    /** Forgets every cached key (shutdown). */
    clear() {
      cache.clear();
      newest.clear();
    },
  };
}

/** The signer domain object. */
export type Signer = ReturnType<typeof createSigner>;
