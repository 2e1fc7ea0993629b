import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";

/**
 * HPKE (RFC 9180), base mode, single-shot, with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256,
 * on node:crypto. The AEAD is AES-256-GCM for keymesh messages; AES-128-GCM is here too
 * because RFC 9180's published X25519 vectors (appendix A.1) use it, and the vectors are
 * what proves the KEM, the labeled HKDF and the key schedule right.
 *
 * Only what keymesh needs: Seal/Open with one message per context (sequence number 0 in
 * production; other sequence numbers only so the published vectors can be replayed).
 */

/** The AEADs supported, by their RFC 9180 identifiers. */
export const AEAD = {
  "aes-128-gcm": { id: 0x0001, nk: 16 },
  "aes-256-gcm": { id: 0x0002, nk: 32 },
} as const;
export type AeadName = keyof typeof AEAD;

const KEM_ID = 0x0020; // DHKEM(X25519, HKDF-SHA256)
const KDF_ID = 0x0001; // HKDF-SHA256
const NH = 32;
const NN = 12;
const TAG = 16;
const VERSION_LABEL = Buffer.from("HPKE-v1");

const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

/** A box could not be opened: wrong key, tampered ciphertext, info or associated data. */
export class HpkeOpenError extends Error {
  override readonly name = "HpkeOpenError";
}

const i2osp = (n: number, w: number): Buffer => {
  const b = Buffer.alloc(w);
  b.writeUIntBE(n, 0, w);
  return b;
};

const kemSuiteId = Buffer.concat([Buffer.from("KEM"), i2osp(KEM_ID, 2)]);
const hpkeSuiteId = (aead: AeadName) =>
  Buffer.concat([Buffer.from("HPKE"), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(AEAD[aead].id, 2)]);

// HKDF's two halves (RFC 5869) are needed separately: node's hkdf() only does both at once.
const extract = (salt: Uint8Array, ikm: Uint8Array): Buffer => createHmac("sha256", salt).update(ikm).digest();

function expand(prk: Uint8Array, info: Uint8Array, length: number): Buffer {
  const blocks: Buffer[] = [];
  let previous = Buffer.alloc(0);
  for (let i = 1; blocks.length * NH < length; i++) {
    previous = createHmac("sha256", prk).update(previous).update(info).update(Buffer.of(i)).digest();
    blocks.push(previous);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

const labeledExtract = (suite: Buffer, salt: Uint8Array, label: string, ikm: Uint8Array) =>
  extract(salt, Buffer.concat([VERSION_LABEL, suite, Buffer.from(label), ikm]));

const labeledExpand = (suite: Buffer, prk: Uint8Array, label: string, info: Uint8Array, length: number) =>
  expand(prk, Buffer.concat([i2osp(length, 2), VERSION_LABEL, suite, Buffer.from(label), info]), length);

const EMPTY = Buffer.alloc(0);

/** An X25519 private key from its 32 raw bytes. */
export function x25519PrivateKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new RangeError(`an X25519 private key is 32 bytes, got ${raw.length}`);
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
}

/** An X25519 public key from its 32 raw bytes. */
export function x25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new RangeError(`an X25519 public key is 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

/** The 32 raw bytes of an X25519 key (public or private). */
export function rawX25519(key: KeyObject): Buffer {
  if (key.type === "private") return Buffer.from(key.export({ format: "der", type: "pkcs8" }).subarray(-32));
  return Buffer.from(key.export({ format: "der", type: "spki" }).subarray(-32));
}

/** A fresh X25519 key pair as raw bytes. */
export function generateX25519(): { privateKey: Buffer; publicKey: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { privateKey: rawX25519(privateKey), publicKey: rawX25519(publicKey) };
}

/** DeriveKeyPair(ikm) of DHKEM(X25519) (RFC 9180 section 7.1.3). */
export function deriveX25519KeyPair(ikm: Uint8Array): { privateKey: Buffer; publicKey: Buffer } {
  const prk = labeledExtract(kemSuiteId, EMPTY, "dkp_prk", ikm);
  const sk = labeledExpand(kemSuiteId, prk, "sk", EMPTY, 32);
  return { privateKey: sk, publicKey: rawX25519(createPublicKey(x25519PrivateKey(sk))) };
}

function dh(privateRaw: Uint8Array, publicRaw: Uint8Array): Buffer {
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: x25519PrivateKey(privateRaw), publicKey: x25519PublicKey(publicRaw) });
  } catch {
    throw new HpkeOpenError("the X25519 key agreement failed");
  }
  // A small-order public key yields the all-zero output; RFC 9180 7.1.4 requires refusing it.
  if (shared.every((b) => b === 0)) throw new HpkeOpenError("the X25519 key agreement produced the zero value");
  return shared;
}

function sharedSecret(dhOut: Buffer, enc: Uint8Array, pkR: Uint8Array): Buffer {
  const prk = labeledExtract(kemSuiteId, EMPTY, "eae_prk", dhOut);
  return labeledExpand(kemSuiteId, prk, "shared_secret", Buffer.concat([enc, pkR]), 32);
}

/** The key schedule's outputs for base mode (exposed for the test vectors). */
export interface HpkeContext {
  readonly key: Buffer;
  readonly baseNonce: Buffer;
  readonly exporterSecret: Buffer;
  readonly aead: AeadName;
}

/** KeySchedule(mode_base, shared_secret, info, "", "") (RFC 9180 section 5.1). */
export function keySchedule(aead: AeadName, shared: Uint8Array, info: Uint8Array): HpkeContext {
  const suite = hpkeSuiteId(aead);
  const pskIdHash = labeledExtract(suite, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = labeledExtract(suite, EMPTY, "info_hash", info);
  const context = Buffer.concat([Buffer.of(0x00), pskIdHash, infoHash]);
  const secret = labeledExtract(suite, shared, "secret", EMPTY);
  return {
    aead,
    key: labeledExpand(suite, secret, "key", context, AEAD[aead].nk),
    baseNonce: labeledExpand(suite, secret, "base_nonce", context, NN),
    exporterSecret: labeledExpand(suite, secret, "exp", context, NH),
  };
}

function nonceFor(ctx: HpkeContext, seq: number): Buffer {
  const nonce = Buffer.from(ctx.baseNonce);
  const s = Buffer.alloc(8);
  s.writeBigUInt64BE(BigInt(seq));
  for (let i = 0; i < 8; i++) nonce[NN - 8 + i]! ^= s[i]!;
  return nonce;
}

/** The context's Seal at sequence number `seq`: ciphertext || tag. */
export function contextSeal(ctx: HpkeContext, aad: Uint8Array, plaintext: Uint8Array, seq = 0): Buffer {
  const cipher = createCipheriv(ctx.aead, ctx.key, nonceFor(ctx, seq));
  cipher.setAAD(aad);
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** The context's Open at sequence number `seq`; HpkeOpenError on any mismatch. */
export function contextOpen(ctx: HpkeContext, aad: Uint8Array, ciphertext: Uint8Array, seq = 0): Buffer {
  if (ciphertext.length < TAG) throw new HpkeOpenError("the ciphertext is shorter than its tag");
  const ct = Buffer.from(ciphertext);
  const decipher = createDecipheriv(ctx.aead, ctx.key, nonceFor(ctx, seq));
  decipher.setAAD(aad);
  decipher.setAuthTag(ct.subarray(ct.length - TAG));
  try {
    return Buffer.concat([decipher.update(ct.subarray(0, ct.length - TAG)), decipher.final()]);
  } catch {
    throw new HpkeOpenError("the sealed box failed authentication");
  }
}

/** SetupBaseS: encapsulates to `recipientPublicKey`; `ephemeralPrivateKey` only for test vectors. */
export function setupBaseSender(
  aead: AeadName,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  ephemeralPrivateKey?: Uint8Array,
): { enc: Buffer; context: HpkeContext } {
  const skE = ephemeralPrivateKey ?? generateX25519().privateKey;
  const enc = rawX25519(createPublicKey(x25519PrivateKey(skE)));
  const shared = sharedSecret(dh(skE, recipientPublicKey), enc, recipientPublicKey);
  return { enc, context: keySchedule(aead, shared, info) };
}

/** SetupBaseR: decapsulates `enc` with the recipient's private key. */
export function setupBaseRecipient(aead: AeadName, enc: Uint8Array, recipientPrivateKey: Uint8Array, info: Uint8Array): HpkeContext {
  if (enc.length !== 32) throw new HpkeOpenError(`the encapsulated key is ${enc.length} bytes, expected 32`);
  const pkR = rawX25519(createPublicKey(x25519PrivateKey(recipientPrivateKey)));
  return keySchedule(aead, sharedSecret(dh(recipientPrivateKey, enc), enc, pkR), info);
}

/** A sealed box: the encapsulated key and the ciphertext with its tag. */
export interface SealedBox {
  readonly enc: Buffer;
  readonly ciphertext: Buffer;
}

/** Single-shot Seal (RFC 9180 section 6.1) in base mode. */
export function sealBase(aead: AeadName, recipientPublicKey: Uint8Array, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): SealedBox {
  const { enc, context } = setupBaseSender(aead, recipientPublicKey, info);
  return { enc, ciphertext: contextSeal(context, aad, plaintext) };
}

/** Single-shot Open in base mode; HpkeOpenError when the box does not open. */
export function openBase(aead: AeadName, recipientPrivateKey: Uint8Array, info: Uint8Array, aad: Uint8Array, box: SealedBox): Buffer {
  return contextOpen(setupBaseRecipient(aead, box.enc, recipientPrivateKey, info), aad, box.ciphertext);
}
