import type { KeyObject } from "node:crypto";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { ed25519PublicKey } from "../shared/crypto/ed25519.js";
import { checkLease, type LeaseTokens } from "../shared/crypto/lease-token.js";

/** What collection knows about the lease a commit was made under. */
export interface LeaseView {
  /** The key's public key, for the commit's signature sample. */
  readonly publicKey: KeyObject;
  /** When the lease lapses unless renewed (key service clock, Unix ms), from its token. */
  readonly validUntil: number;
}

/** The lease credentials a commit carries. */
export interface CommitLease {
  readonly keyId: string;
  readonly fence: bigint;
  readonly leaseId: string;
  readonly leaseToken: string;
}

/**
 * Checks a commit's lease: undefined when the credentials do not prove a lease (forged or
 * foreign token, wrong lease id, key unknown), with the reason. The lapse itself is checked
 * by the store inside the commit transaction, against `validUntil`. Key service unreachable
 * (for a public key not seen before) throws: a commit that cannot be checked is not accepted.
 */
export type LeaseCheck = (lease: CommitLease, signal?: AbortSignal) => Promise<{ view?: LeaseView; problem?: string }>;

/**
 * The lease check: the lease token (MAC'd by the key service, see lease-token.ts) is
 * verified locally, with no call per commit. Public keys never change, so each key's is
 * asked of the key service once, made a KeyObject once, (GetKeyringKey through the generated client; collection never
 * reads the key service's tables) and kept.
 */
export function createLeaseCheck(keys: Client<typeof KeyManagementService>, tokens: LeaseTokens, opts: { maxKeys?: number } = {}): LeaseCheck {
  const publicKeys = new Map<string, Promise<KeyObject | undefined>>();
  const limit = opts.maxKeys ?? 10_000;

  const publicKeyOf = (keyId: string, signal?: AbortSignal): Promise<KeyObject | undefined> => {
    let found = publicKeys.get(keyId);
    if (!found) {
      found = keys.getKeyringKey({ keyId }, signal === undefined ? {} : { signal }).then(
        ({ key }) => (key ? ed25519PublicKey(key.publicKey) : undefined),
        (err: unknown) => {
          if (ConnectError.from(err).code === Code.NotFound) return undefined;
          throw err;
        },
      );
      publicKeys.set(keyId, found);
      // Only known keys stay: failures and unknown ids are asked again next time.
      found.then((k) => k === undefined && publicKeys.delete(keyId), () => publicKeys.delete(keyId));
      if (publicKeys.size > limit) publicKeys.delete(publicKeys.keys().next().value!);
    }
    return found;
  };

  /** The KeyObject of a public key a token vouched for, made once per key. */
  const vouched = new Map<string, { raw: Buffer; key: KeyObject }>();
  const vouchedKey = (keyId: string, raw: Buffer): KeyObject => {
    const known = vouched.get(keyId);
    if (known && known.raw.equals(raw)) return known.key;
    const key = ed25519PublicKey(raw);
    vouched.set(keyId, { raw, key });
    if (vouched.size > limit) vouched.delete(vouched.keys().next().value!);
    return key;
  };

  // The expiry is not judged here (now = 0): the store judges it inside its transaction.
  return async (lease, signal) => {
    const { claims, problem } = checkLease(tokens, lease, 0);
    if (!claims) return { problem: problem! };
    // The token vouches for the key's public key; older tokens do not carry it.
    const publicKey = claims.publicKey ? vouchedKey(lease.keyId, claims.publicKey) : await publicKeyOf(lease.keyId, signal);
    if (!publicKey) return { problem: `keyring key ${lease.keyId} does not exist` };
    return { view: { publicKey, validUntil: claims.expiresAt } };
  };
}
