import { createPublicKey, verify, type KeyObject } from "node:crypto";
import { InvalidInputError } from "../errors.js";

const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** Builds a public KeyObject from a raw 32-byte Ed25519 key. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new InvalidInputError(`an Ed25519 public key is 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

/** Verifies one Ed25519 signature; false for any malformed input. */
export function verifyEd25519(publicKey: KeyObject, payload: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  try {
    return verify(null, payload, publicKey, signature);
  } catch {
    return false;
  }
}

/**
 * Verifies one Ed25519 signature on libuv's thread pool, off the event loop; false for any
 * malformed input.
 */
export function verifyEd25519Async(publicKey: KeyObject, payload: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (signature.length !== 64) return Promise.resolve(false);
  return new Promise((resolve) => {
    try {
      verify(null, payload, publicKey, signature, (err, ok) => resolve(!err && ok));
    } catch {
      resolve(false);
    }
  });
}

/** The raw 32-byte public key of an Ed25519 KeyObject. */
export function rawEd25519PublicKey(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: "der", type: "spki" }).subarray(-32));
}
