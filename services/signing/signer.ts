import { createPrivateKey, sign, type KeyObject } from "node:crypto";
import { open, type MasterKeyring } from "../shared/crypto/envelope.js";
import { keyringSealContext } from "../keys/seal-context.js";

/** A sealed signing key as the key service hands it to the lease holder. */
export interface WrappedSigningKey {
  readonly keyId: string;
  readonly fence: number;
  readonly wrapped: Uint8Array;
}

/** Fetches the sealed private key for a key under a lease's fence (the key service checks the fence). */
export type WrappedKeySource = (keyId: string, fence: number) => Promise<WrappedSigningKey>;

/**
 * The signer: decrypts a key's private key once per lease (key id + fence) and keeps the
 * parsed KeyObject only while that lease is the newest one seen for the key. The private
 * key never leaves this object: not in logs, errors or replies.
 */
export function createSigner(deps: { source: WrappedKeySource; masterKeys: () => MasterKeyring; maxCachedKeys?: number }) {
  const cache = new Map<string, { fence: number; key: Promise<KeyObject> }>();
  const limit = deps.maxCachedKeys ?? 512;

  function keyFor(keyId: string, fence: number): Promise<KeyObject> {
    const hit = cache.get(keyId);
    if (hit && hit.fence === fence) return hit.key;
    const key = deps.source(keyId, fence).then((w) => {
      const der = open(deps.masterKeys(), w.wrapped, keyringSealContext(w.keyId));
      try {
        return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
      } finally {
        der.fill(0);
      }
    });
    cache.delete(keyId);
    cache.set(keyId, { fence, key });
    key.catch(() => {
      if (cache.get(keyId)?.key === key) cache.delete(keyId);
    });
    if (cache.size > limit) cache.delete(cache.keys().next().value!);
    return key;
  }

  return {
    /**
     * Signs every payload with the key leased under `fence`. The batch's limits (1-10000
     * items of at most 1024 bytes, a positive fence) are signing_service.proto's rules,
     * checked before a batch gets here.
     */
    async signBatch(keyId: string, fence: number, items: readonly { recordId: bigint; payload: Uint8Array }[]) {
      const key = await keyFor(keyId, fence);
      return items.map((item) => ({ recordId: item.recordId, signature: sign(null, item.payload, key) }));
    },

    /** Forgets every cached key (shutdown). */
    clear() {
      cache.clear();
    },
  };
}

/** The signer domain object. */
export type Signer = ReturnType<typeof createSigner>;
