/**
 * The binary size of a message without encoding it, like Go's `proto.Size`, which
 * otelconnect-go uses for `rpc.*.request.size`. protobuf-es has no size function and
 * `toBinary` on a 1000-record batch costs about 5 ms, several times per batch and hop; this
 * walk computes the same number from the schema in a fraction of that, without allocating.
 */
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

const IMPLICIT = 2; // FeatureSet_FieldPresence.IMPLICIT

type Plain = Record<string, unknown> & { $unknown?: { no: number; wireType: number; data: Uint8Array }[] };

/** Bytes `message` of type `schema` takes in the protobuf binary format. */
export function protoSize(schema: DescMessage, message: unknown): number {
  const msg = message as Plain;
  let size = 0;
  for (const field of schema.fields) {
    let value: unknown;
    if (field.oneof !== undefined) {
      const o = msg[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (o?.case !== field.localName) continue;
      value = o.value;
    } else {
      value = msg[field.localName];
      if (value === undefined || value === null) continue;
    }
    size += fieldSize(field, value);
  }
  for (const u of msg.$unknown ?? []) size += varintSize(u.no * 8) + u.data.byteLength;
  return size;
}

function fieldSize(field: DescField, value: unknown): number {
  const tag = varintSize(field.number * 8);
  switch (field.fieldKind) {
    case "scalar":
    case "enum": {
      const type = field.fieldKind === "enum" ? ScalarType.INT32 : field.scalar;
      if (field.oneof === undefined && field.presence === IMPLICIT && isZero(type, value)) return 0;
      return tag + scalarSize(type, value);
    }
    case "message":
      return tag + delimited(protoSize(field.message, value));
    case "list": {
      const list = value as unknown[];
      if (list.length === 0) return 0;
      if (field.listKind === "message") {
        let s = 0;
        for (const item of list) s += tag + delimited(protoSize(field.message, item));
        return s;
      }
      const type = field.listKind === "enum" ? ScalarType.INT32 : field.scalar;
      let s = 0;
      for (const item of list) s += scalarSize(type, item);
      return field.packed ? tag + delimited(s) : s + tag * list.length;
    }
    case "map": {
      let s = 0;
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        const key = 1 + scalarSize(field.mapKey, mapKey(field.mapKey, k));
        const val =
          field.mapKind === "message"
            ? 1 + delimited(protoSize(field.message, v))
            : 1 + scalarSize(field.mapKind === "enum" ? ScalarType.INT32 : field.scalar, v);
        s += tag + delimited(key + val);
      }
      return s;
    }
  }
}

function delimited(length: number): number {
  return varintSize(length) + length;
}

function mapKey(type: ScalarType, key: string): unknown {
  if (type === ScalarType.STRING) return key;
  if (type === ScalarType.BOOL) return key === "true";
  return BigInt(key);
}

function isZero(type: ScalarType, value: unknown): boolean {
  switch (type) {
    case ScalarType.STRING:
      return value === "";
    case ScalarType.BYTES:
      return (value as Uint8Array).byteLength === 0;
    case ScalarType.BOOL:
      return value === false;
    default:
      // Numbers, and 64-bit integers as bigint or string.
      return value === 0 || value === 0n || value === "0";
  }
}

function scalarSize(type: ScalarType, value: unknown): number {
  switch (type) {
    case ScalarType.STRING:
      return delimited(Buffer.byteLength(value as string, "utf8"));
    case ScalarType.BYTES:
      return delimited((value as Uint8Array).byteLength);
    case ScalarType.BOOL:
      return 1;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 8;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return 4;
    case ScalarType.INT32:
      return (value as number) < 0 ? 10 : varintSize(value as number);
    case ScalarType.UINT32:
      return varintSize(value as number);
    case ScalarType.SINT32: {
      const n = value as number;
      return varintSize(n >= 0 ? n * 2 : -n * 2 - 1);
    }
    case ScalarType.SINT64: {
      const n = BigInt(value as bigint | string);
      return bigVarintSize(n >= 0n ? n * 2n : -n * 2n - 1n);
    }
    default: {
      // INT64 and UINT64: two's complement, so negatives take ten bytes.
      const n = BigInt(value as bigint | string);
      return n < 0n ? 10 : bigVarintSize(n);
    }
  }
}

function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  let size = 5;
  n = Math.floor(n / 0x800000000);
  while (n > 0) {
    size++;
    n = Math.floor(n / 0x80);
  }
  return size;
}

function bigVarintSize(n: bigint): number {
  if (n < 0x10000000n) return varintSize(Number(n));
  let size = 1;
  while (n >= 0x80n) {
    n >>= 7n;
    size++;
  }
  return size;
}
