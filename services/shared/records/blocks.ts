/**
 * Packing and unpacking of keymesh.records.v1 blocks: a batch of records or signatures as a
 * few fields on the wire (packed ids, one concatenated bytes field) instead of one message per
 * record. Unpacking never copies payloads or signatures: each is a view into the block's bytes.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { RecordBlock, RecordBlockSchema, SignatureBlock, SignatureBlockSchema } from "../../../gen/keymesh/records/v1/blocks_pb.js";
import { InvalidInputError } from "../errors.js";

/** Bytes in one Ed25519 signature. */
export const SIGNATURE_BYTES = 64;

/** The largest payload a record may have. */
export const MAX_PAYLOAD_BYTES = 1024;

const MAX_ID = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * The ids as exact numbers; InvalidInputError naming `field` and the first id outside
 * 0..2^53-1 (the proto documents the range; checking it here costs one pass over the ids
 * instead of a validation rule per item).
 */
function exactIds(ids: readonly bigint[], field: string): number[] {
  const out = new Array<number>(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0n || id > MAX_ID) throw new InvalidInputError(`${field}[${i}]: ${id} is not between 0 and 9007199254740991`);
    out[i] = Number(id);
  }
  return out;
}

/** Records of a block: ids as exact numbers (the proto bounds them to 2^53 - 1), payload views. */
export interface UnpackedRecords {
  readonly ids: number[];
  readonly payloads: Uint8Array[];
}

/** Signatures of a block: ids as exact numbers, each signature a 64-byte view. */
export interface UnpackedSignatures {
  readonly ids: number[];
  readonly signatures: Uint8Array[];
}

/** Packs records (in the order given) into a RecordBlock. */
export function packRecords(records: readonly { id: number; payload: Uint8Array }[]): MessageInitShape<typeof RecordBlockSchema> {
  const lengths = records.map((r) => r.payload.length);
  return {
    ids: records.map((r) => BigInt(r.id)),
    payloadLengths: lengths,
    payloads: Buffer.concat(records.map((r) => r.payload)),
  };
}

/**
 * Splits a RecordBlock into its records. The proto's rules (one length per id, at most 10000)
 * were checked on the way in; the per-record limits (ids within 0..2^53-1, payloads of at most
 * 1024 bytes) and that the lengths add up to the payload bytes are checked here.
 */
export function unpackRecords(block: RecordBlock | undefined): UnpackedRecords {
  if (!block) return { ids: [], payloads: [] };
  const { ids, payloadLengths, payloads } = block;
  if (payloadLengths.length !== ids.length) throw new InvalidInputError(`records: ${ids.length} ids but ${payloadLengths.length} payload lengths`);
  let total = 0;
  for (let i = 0; i < payloadLengths.length; i++) {
    const n = payloadLengths[i]!;
    if (n > MAX_PAYLOAD_BYTES) throw new InvalidInputError(`records.payload_lengths[${i}]: ${n} bytes is more than the ${MAX_PAYLOAD_BYTES} a payload may have`);
    total += n;
  }
  if (total !== payloads.length) throw new InvalidInputError(`records: payload lengths add up to ${total} bytes but ${payloads.length} bytes were sent`);
  let at = 0;
  const out = payloadLengths.map((n) => payloads.subarray(at, (at += n)));
  return { ids: exactIds(ids, "records.ids"), payloads: out };
}

/** Packs signatures (64 bytes each, in the order of `ids`) into a SignatureBlock. */
export function packSignatures(ids: readonly (number | bigint)[], signatures: Uint8Array): MessageInitShape<typeof SignatureBlockSchema> {
  if (signatures.length !== ids.length * SIGNATURE_BYTES) throw new Error(`${ids.length} ids need ${ids.length * SIGNATURE_BYTES} signature bytes, got ${signatures.length}`);
  return { recordIds: ids.map((id) => BigInt(id)), signatures };
}

/** Splits a SignatureBlock into its signatures (the proto's rule checked 64 bytes per id; the ids' range is checked here). */
export function unpackSignatures(block: SignatureBlock | undefined): UnpackedSignatures {
  if (!block) return { ids: [], signatures: [] };
  const { recordIds, signatures } = block;
  if (signatures.length !== recordIds.length * SIGNATURE_BYTES) {
    throw new InvalidInputError(`signatures: ${recordIds.length} record ids need ${recordIds.length * SIGNATURE_BYTES} bytes, got ${signatures.length}`);
  }
  const out = recordIds.map((_, i) => signatures.subarray(i * SIGNATURE_BYTES, (i + 1) * SIGNATURE_BYTES));
  return { ids: exactIds(recordIds, "signatures.record_ids"), signatures: out };
}
