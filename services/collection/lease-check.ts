import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";

/** What the key service says about a lease a commit was made under. */
export interface LeaseView {
  /** The key's public key, for the commit's spot-check. */
  readonly publicKey: Buffer;
  /** When the lease lapses unless renewed (key service clock, Unix ms). */
  readonly validUntil: number;
}

/**
 * Asks whether `fence` is still the current lease on `keyId`; undefined when it is not (the
 * fence moved on, or the key does not exist). Other failures (key service unreachable) throw:
 * a commit that cannot be checked is not accepted.
 */
export type LeaseCheck = (keyId: string, fence: number, signal?: AbortSignal) => Promise<LeaseView | undefined>;

/**
 * The lease check through the key service's generated client: collection never reads the
 * key service's tables. GetKeyringKey reads the key's row on the key service's primary, so
 * the answer is as fresh as the fence itself.
 */
export function createLeaseCheck(keys: Client<typeof KeyManagementService>): LeaseCheck {
  return async (keyId, fence, signal) => {
    try {
      const { key } = await keys.getKeyringKey({ keyId }, signal === undefined ? {} : { signal });
      if (!key || Number(key.fence) !== fence) return undefined;
      return { publicKey: Buffer.from(key.publicKey), validUntil: Number(key.leasedUntilMs) };
    } catch (err) {
      if (ConnectError.from(err).code === Code.NotFound) return undefined;
      throw err;
    }
  };
}
