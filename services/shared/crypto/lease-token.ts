import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import type { MasterKeyring } from "./envelope.js";

/**
 * Lease ids and lease tokens: the capabilities of the signing pipeline.
 *
 * A lease id is 256 random bits, handed only to the holder by AcquireKeyLease; the key
 * service stores its SHA-256 and compares hashes in constant time. A lease token is what the
 * key service vouches for: an HMAC-SHA256 over (key id, fence, hash of the lease id, expiry,
 * and the key's public key),
 * keyed with a key derived by HKDF from a master key (the key service, the signing service
 * and collection all load the master keys). It lets signing and collection check locally,
 * without a call to the key service, that a batch comes from the holder of that lease and
 * that the lease has not lapsed: the token names the lease id's hash, and the caller must
 * present the lease id itself.
 *
 * The token names the master-key version its MAC key came from, so tokens minted before a
 * master-key rotation still verify while that version is loaded; tokens live no longer than
 * a lease (at most ten minutes), so retiring a version only ends in-flight leases early.
 */

/** What a lease token asserts. */
export interface LeaseClaims {
  readonly keyId: string;
  readonly fence: bigint;
  /** SHA-256 of the lease id. */
  readonly leaseHash: Buffer;
  /** When the lease lapses, key-service clock, Unix ms. */
  readonly expiresAt: number;
  /**
   * The key's raw 32-byte Ed25519 public key, so that collection checks a commit's sample
   * without asking the key service for it. Absent from tokens minted without it.
   */
  readonly publicKey?: Buffer | undefined;
}

const INFO = "keymesh/lease-token/v1";

/** A fresh lease id: 256 random bits, base64url. */
export function newLeaseId(): string {
  return randomBytes(32).toString("base64url");
}

/** The stored form of a lease id. */
export function hashLeaseId(leaseId: string): Buffer {
  return createHash("sha256").update(leaseId, "utf8").digest();
}

/** Whether `leaseId` hashes to `hash`, in constant time. */
export function leaseIdMatches(leaseId: string, hash: Uint8Array | null | undefined): boolean {
  if (!hash || hash.length !== 32) return false;
  return timingSafeEqual(hashLeaseId(leaseId), hash);
}

function macKey(ring: MasterKeyring, version: number): Buffer | undefined {
  const master = ring.key(version);
  if (!master) return undefined;
  return Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), INFO, 32));
}

function body(c: LeaseClaims): string {
  const parts = [Buffer.from(c.keyId, "utf8").toString("base64url"), c.fence.toString(), c.leaseHash.toString("base64url"), String(c.expiresAt)];
  if (c.publicKey) parts.push(c.publicKey.toString("base64url"));
  return parts.join(".");
}

/** Mints and checks lease tokens with keys derived from the master keyring. */
export function createLeaseTokens(masterKeys: () => MasterKeyring) {
  const keys = new Map<string, Buffer>();
  const keyOf = (version: number): Buffer | undefined => {
    const ring = masterKeys();
    // Cached per loaded key: a reloaded ring with another key under the same version re-derives.
    const master = ring.key(version);
    if (!master) return undefined;
    const id = `${version}:${createHash("sha256").update(master).digest("hex")}`;
    let key = keys.get(id);
    if (!key) {
      key = macKey(ring, version)!;
      keys.set(id, key);
    }
    return key;
  };

  return {
    /** A token for `claims`, MAC'd under the primary master key's derived key. */
    mint(claims: LeaseClaims): string {
      const version = masterKeys().primaryVersion;
      const text = `v${version}.${body(claims)}`;
      const mac = createHmac("sha256", keyOf(version)!).update(text).digest("base64url");
      return `${text}.${mac}`;
    },

    /** The token's claims when its MAC verifies; undefined for anything else (never throws). */
    verify(token: string): LeaseClaims | undefined {
      if (token.length === 0 || token.length > 512) return undefined;
      const parts = token.split(".");
      // v<version>.<key>.<fence>.<lease hash>.<expiry>[.<public key>].<mac>
      if ((parts.length !== 6 && parts.length !== 7) || !/^v\d{1,10}$/.test(parts[0]!)) return undefined;
      const key = keyOf(Number(parts[0]!.slice(1)));
      if (!key) return undefined;
      const text = parts.slice(0, -1).join(".");
      const expected = createHmac("sha256", key).update(text).digest();
      const given = Buffer.from(parts.at(-1)!, "base64url");
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
      const [, keyId, fence, hash, expiresAt, publicKey] = parts as [string, string, string, string, string, string | undefined];
      if (!/^\d{1,19}$/.test(fence) || !/^\d{1,16}$/.test(expiresAt)) return undefined;
      const raw = parts.length === 7 ? Buffer.from(publicKey!, "base64url") : undefined;
      if (raw && raw.length !== 32) return undefined;
      return { keyId: Buffer.from(keyId, "base64url").toString("utf8"), fence: BigInt(fence), leaseHash: Buffer.from(hash, "base64url"), expiresAt: Number(expiresAt), publicKey: raw };
    },
  };
}

/** Lease token minting and checking. */
export type LeaseTokens = ReturnType<typeof createLeaseTokens>;

/** Why a batch's lease credentials were refused, or undefined when they hold. */
export function checkLease(
  tokens: LeaseTokens,
  presented: { keyId: string; fence: bigint; leaseId: string; leaseToken: string },
  now: number,
): { claims?: LeaseClaims; problem?: string } {
  const claims = tokens.verify(presented.leaseToken);
  if (!claims) return { problem: "the lease token is missing or was not issued by the key service" };
  if (claims.keyId !== presented.keyId || claims.fence !== presented.fence) {
    return { problem: `the lease token is for another lease than ${presented.keyId} fence ${presented.fence}` };
  }
  if (!leaseIdMatches(presented.leaseId, claims.leaseHash)) return { problem: "the lease id does not match the lease token" };
  if (now >= claims.expiresAt) return { problem: `the lease on ${presented.keyId} with fence ${presented.fence} has lapsed` };
  return { claims };
}
