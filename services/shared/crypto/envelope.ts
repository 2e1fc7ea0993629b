import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { SealedDataError, UnknownMasterKeyError } from "../errors.js";

/**
 * Envelope encryption at rest: AES-256-GCM under a versioned master key.
 *
 * Layout of a sealed value (self-describing, like Vault's `vault:v2:` prefix):
 *
 *   byte 0      format (0x01)
 *   bytes 1-4   master-key version, big-endian uint32
 *   bytes 5-16  96-bit nonce, fresh for every encryption
 *   bytes 17-   ciphertext || 16-byte GCM tag
 *
 * The associated data binds the ciphertext to its row: the header bytes plus
 * "table/column/id/rowVersion", so a ciphertext copied to another row, column or version
 * fails to open. Any tampering (nonce, tag, ciphertext, header, truncation) fails with
 * `SealedDataError` — never with garbage plaintext.
 */

const FORMAT_V1 = 0x01;
const HEADER_BYTES = 1 + 4 + 12;
const TAG_BYTES = 16;

/** Where a sealed value lives; part of the associated data. */
export interface SealContext {
  readonly table: string;
  readonly column: string;
  readonly id: string;
  /** The row's own version (e.g. a secret's version number); 0 when rows are unversioned. */
  readonly rowVersion?: number;
}

/** The master keys a process holds: 32-byte AES keys by version, one of them primary. */
export interface MasterKeyring {
  readonly primaryVersion: number;
  key(version: number): Buffer | undefined;
  versions(): number[];
}

/** Builds a keyring from versioned keys; the primary must be one of them. */
export function createMasterKeyring(keys: ReadonlyMap<number, Buffer>, primaryVersion: number): MasterKeyring {
  for (const [version, key] of keys) {
    if (!Number.isInteger(version) || version < 1 || version > 0xffffffff) {
      throw new Error(`master key version ${version} is not a positive 32-bit integer`);
    }
    if (key.length !== 32) throw new Error(`master key version ${version} is ${key.length} bytes, expected 32`);
  }
  if (!keys.has(primaryVersion)) throw new Error(`primary master key version ${primaryVersion} is not among the keys`);
  const copy = new Map(keys);
  return {
    primaryVersion,
    key: (version) => copy.get(version),
    versions: () => [...copy.keys()].sort((a, b) => a - b),
  };
}

function associatedData(header: Buffer, ctx: SealContext): Buffer {
  const where = `keymesh/${ctx.table}/${ctx.column}/${ctx.id}/${ctx.rowVersion ?? 0}`;
  return Buffer.concat([header, Buffer.from(where, "utf8")]);
}

/** Encrypts `plaintext` under the primary master key, bound to `ctx`. */
export function seal(keyring: MasterKeyring, plaintext: Uint8Array, ctx: SealContext): Buffer {
  const version = keyring.primaryVersion;
  const key = keyring.key(version);
  if (!key) throw new UnknownMasterKeyError(version);
  const header = Buffer.alloc(HEADER_BYTES);
  header[0] = FORMAT_V1;
  header.writeUInt32BE(version, 1);
  randomBytes(12).copy(header, 5);
  const cipher = createCipheriv("aes-256-gcm", key, header.subarray(5, HEADER_BYTES));
  cipher.setAAD(associatedData(header, ctx));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return Buffer.concat([header, body]);
}

/** The master-key version a sealed value was encrypted under. */
export function sealedVersion(sealed: Uint8Array): number {
  if (sealed.length < HEADER_BYTES + TAG_BYTES || sealed[0] !== FORMAT_V1) {
    throw new SealedDataError("sealed value is truncated or has an unknown format");
  }
  return Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length).readUInt32BE(1);
}

/** Decrypts a sealed value; throws SealedDataError on any tampering or a context mismatch. */
export function open(keyring: MasterKeyring, sealed: Uint8Array, ctx: SealContext): Buffer {
  const version = sealedVersion(sealed);
  const key = keyring.key(version);
  if (!key) throw new UnknownMasterKeyError(version);
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length);
  const header = buf.subarray(0, HEADER_BYTES);
  const tag = buf.subarray(buf.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, header.subarray(5, HEADER_BYTES));
  decipher.setAAD(associatedData(header, ctx));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(buf.subarray(HEADER_BYTES, buf.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new SealedDataError(`sealed value for ${ctx.table}.${ctx.column} ${ctx.id} failed authentication`);
  }
}

/** Re-encrypts a sealed value under the primary version (no-op result if already there). */
export function rewrap(keyring: MasterKeyring, sealed: Uint8Array, ctx: SealContext): Buffer {
  return seal(keyring, open(keyring, sealed, ctx), ctx);
}
