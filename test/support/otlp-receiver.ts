/**
 * An OTLP/HTTP trace receiver for tests: POST /v1/traces with
 * `application/x-protobuf` (decoded from the wire format of
 * ExportTraceServiceRequest) or `application/json`, optionally gzipped.
 * Spans are kept as plain objects for assertions.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** An attribute value after flattening: arrays and maps become JS arrays and objects. */
export type AttributeValue = string | number | boolean | bigint | Uint8Array | null | AttributeValue[] | { [key: string]: AttributeValue };

/** A span event. */
export interface ReceivedEvent {
  name: string;
  attributes: Record<string, AttributeValue>;
}

/** One exported span. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  /** "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER" or "UNSPECIFIED". */
  kind: string;
  attributes: Record<string, AttributeValue>;
  /** code: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  events: ReceivedEvent[];
  links: Array<{ traceId: string; spanId: string }>;
  /** service.name of the exporting resource. */
  serviceName: string;
  /** Instrumentation scope, e.g. "@opentelemetry/instrumentation-knex". */
  scope: string;
}

/** A running receiver. */
export interface OtlpReceiver {
  /** Base URL to use as OTEL_EXPORTER_OTLP_ENDPOINT. */
  url: string;
  /** Every span received so far. */
  spans(): ReceivedSpan[];
  /** Resolves with the spans once `pred` holds for them; rejects after `timeoutMs`. */
  waitFor(pred: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  /** Stops listening. */
  close(): Promise<void>;
}

const kinds = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"];

/** Starts a receiver on 127.0.0.1 and an ephemeral port. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const received: ReceivedSpan[] = [];
  const waiters = new Set<() => void>();
  const server = createServer((req, res) => {
    void handle(req, res).then(
      (spans) => {
        received.push(...spans);
        for (const wake of waiters) wake();
      },
      (e: unknown) => {
        res.writeHead(400, { "content-type": "text/plain" }).end(String(e));
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    spans: () => [...received],
    waitFor(pred, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred(received)) return;
          cleanup();
          resolve([...received]);
        };
        const timer = setTimeout(() => {
          cleanup();
          const names = received.map((s) => `${s.serviceName}:${s.name}`).join(", ");
          reject(new Error(`OTLP receiver: condition not met within ${timeoutMs} ms; spans: [${names}]`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<ReceivedSpan[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  let body = Buffer.concat(chunks);
  if (req.method !== "POST" || req.url !== "/v1/traces") {
    res.writeHead(404).end();
    return [];
  }
  if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
  const contentType = req.headers["content-type"] ?? "";
  if (contentType.startsWith("application/x-protobuf")) {
    const spans = decodeExportTraceServiceRequest(body);
    // An empty ExportTraceServiceResponse.
    res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    return spans;
  }
  if (contentType.startsWith("application/json")) {
    const spans = fromJson(JSON.parse(body.toString("utf8")) as JsonRequest);
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
    return spans;
  }
  res.writeHead(415).end();
  return [];
}

// --- application/x-protobuf -------------------------------------------------
// Field numbers from opentelemetry/proto/{collector/trace,trace,common,resource}/v1.

type Fields = (field: number, wire: WireType, r: BinaryReader) => boolean;

/** Reads the message at the reader's position up to `end`, skipping unknown fields. */
function readMessage(r: BinaryReader, end: number, fields: Fields): void {
  while (r.pos < end) {
    const [field, wire] = r.tag();
    if (!fields(field, wire, r)) r.skip(wire, field);
  }
}

function sub(r: BinaryReader, fields: Fields): void {
  const len = r.uint32();
  readMessage(r, r.pos + len, fields);
}

/** Decodes an ExportTraceServiceRequest into flat spans. */
export function decodeExportTraceServiceRequest(buf: Uint8Array): ReceivedSpan[] {
  const r = new BinaryReader(buf);
  const spans: ReceivedSpan[] = [];
  readMessage(r, r.len, (f) => {
    if (f !== 1) return false;
    // ResourceSpans
    let serviceName = "";
    const own: ReceivedSpan[] = [];
    sub(r, (f2) => {
      if (f2 === 1) {
        // Resource
        sub(r, (f3) => {
          if (f3 !== 1) return false;
          const [key, value] = readKeyValue(r);
          if (key === "service.name") serviceName = String(value);
          return true;
        });
        return true;
      }
      if (f2 === 2) {
        // ScopeSpans
        let scope = "";
        const scoped: ReceivedSpan[] = [];
        sub(r, (f3) => {
          if (f3 === 1) {
            sub(r, (f4) => (f4 === 1 ? ((scope = r.string()), true) : false));
            return true;
          }
          if (f3 === 2) {
            scoped.push(readSpan(r));
            return true;
          }
          return false;
        });
        for (const span of scoped) span.scope = scope;
        own.push(...scoped);
        return true;
      }
      return false;
    });
    for (const span of own) span.serviceName = serviceName;
    spans.push(...own);
    return true;
  });
  return spans;
}

function readSpan(r: BinaryReader): ReceivedSpan {
  const span: ReceivedSpan = {
    traceId: "",
    spanId: "",
    parentSpanId: "",
    name: "",
    kind: kinds[0]!,
    attributes: {},
    status: { code: 0, message: "" },
    events: [],
    links: [],
    serviceName: "",
    scope: "",
  };
  sub(r, (f) => {
    switch (f) {
      case 1: span.traceId = hex(r.bytes()); return true;
      case 2: span.spanId = hex(r.bytes()); return true;
      case 4: span.parentSpanId = hex(r.bytes()); return true;
      case 5: span.name = r.string(); return true;
      case 6: span.kind = kinds[r.int32()] ?? "UNSPECIFIED"; return true;
      case 9: { const [k, v] = readKeyValue(r); span.attributes[k] = v; return true; }
      case 11: {
        const event: ReceivedEvent = { name: "", attributes: {} };
        sub(r, (f2) => {
          if (f2 === 2) { event.name = r.string(); return true; }
          if (f2 === 3) { const [k, v] = readKeyValue(r); event.attributes[k] = v; return true; }
          return false;
        });
        span.events.push(event);
        return true;
      }
      case 13: {
        const link = { traceId: "", spanId: "" };
        sub(r, (f2) => {
          if (f2 === 1) { link.traceId = hex(r.bytes()); return true; }
          if (f2 === 2) { link.spanId = hex(r.bytes()); return true; }
          return false;
        });
        span.links.push(link);
        return true;
      }
      case 15:
        sub(r, (f2) => {
          if (f2 === 2) { span.status.message = r.string(); return true; }
          if (f2 === 3) { span.status.code = r.int32(); return true; }
          return false;
        });
        return true;
      default:
        return false;
    }
  });
  return span;
}

function readKeyValue(r: BinaryReader): [string, AttributeValue] {
  let key = "";
  let value: AttributeValue = null;
  sub(r, (f) => {
    if (f === 1) { key = r.string(); return true; }
    if (f === 2) { value = readAnyValue(r); return true; }
    return false;
  });
  return [key, value];
}

function readAnyValue(r: BinaryReader): AttributeValue {
  let value: AttributeValue = null;
  sub(r, (f) => {
    switch (f) {
      case 1: value = r.string(); return true;
      case 2: value = r.bool(); return true;
      case 3: value = toNumber(r.int64()); return true;
      case 4: value = r.double(); return true;
      case 5: {
        const values: AttributeValue[] = [];
        sub(r, (f2) => (f2 === 1 ? (values.push(readAnyValue(r)), true) : false));
        value = values;
        return true;
      }
      case 6: {
        const map: Record<string, AttributeValue> = {};
        sub(r, (f2) => {
          if (f2 !== 1) return false;
          const [k, v] = readKeyValue(r);
          map[k] = v;
          return true;
        });
        value = map;
        return true;
      }
      case 7: value = r.bytes(); return true;
      default: return false;
    }
  });
  return value;
}

function toNumber(v: bigint | string): number | bigint {
  const n = BigInt(v);
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

// --- application/json -------------------------------------------------------

interface JsonAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: JsonAnyValue[] };
  kvlistValue?: { values?: JsonKeyValue[] };
  bytesValue?: string;
}
interface JsonKeyValue { key: string; value?: JsonAnyValue }
interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  attributes?: JsonKeyValue[];
  status?: { code?: number; message?: string };
  events?: Array<{ name: string; attributes?: JsonKeyValue[] }>;
  links?: Array<{ traceId: string; spanId: string }>;
}
interface JsonRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: JsonKeyValue[] };
    scopeSpans?: Array<{ scope?: { name?: string }; spans?: JsonSpan[] }>;
  }>;
}

function fromJson(body: JsonRequest): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const resource = jsonAttributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        spans.push({
          traceId: jsonId(s.traceId),
          spanId: jsonId(s.spanId),
          parentSpanId: jsonId(s.parentSpanId ?? ""),
          name: s.name,
          kind: kinds[s.kind ?? 0] ?? "UNSPECIFIED",
          attributes: jsonAttributes(s.attributes),
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? "" },
          events: (s.events ?? []).map((e) => ({ name: e.name, attributes: jsonAttributes(e.attributes) })),
          links: (s.links ?? []).map((l) => ({ traceId: jsonId(l.traceId), spanId: jsonId(l.spanId) })),
          serviceName: String(resource["service.name"] ?? ""),
          scope: ss.scope?.name ?? "",
        });
      }
    }
  }
  return spans;
}

/** OTLP/JSON ids are hex; tolerate base64 from older exporters. */
function jsonId(id: string): string {
  if (id === "" || /^[0-9a-f]+$/i.test(id)) return id.toLowerCase();
  return Buffer.from(id, "base64").toString("hex");
}

function jsonAttributes(list: JsonKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list ?? []) out[kv.key] = jsonValue(kv.value);
  return out;
}

function jsonValue(v: JsonAnyValue | undefined): AttributeValue {
  if (v === undefined) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return toNumber(BigInt(v.intValue));
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(jsonValue);
  if (v.kvlistValue !== undefined) return jsonAttributes(v.kvlistValue.values);
  if (v.bytesValue !== undefined) return Buffer.from(v.bytesValue, "base64");
  return null;
}
