import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeName } from "../errors.js";
import { malformedMessageError } from "../interceptors/call-limits.js";
import { wrapStream } from "../interceptors/wrap-stream.js";

/**
 * connect-es (2.x) reports a unary request message that is not valid protobuf as Internal
 * ("parse binary: …"). It parses a unary request before any interceptor runs and offers no
 * option to change that code, so neither `connectNodeAdapter` nor an interceptor can report
 * it as the caller's fault. This wrapper around unary handlers is the one hand-written gap:
 * it rewrites that one error to InvalidArgument in the response, for each protocol's way of
 * carrying a status: gRPC trailers, the gRPC-Web trailer frame, the Connect error body.
 * Streaming calls parse inside the interceptor chain, so the call-limit interceptor remaps
 * them instead.
 */

/** Content types of the gRPC protocol (not gRPC-Web). */
export const GRPC_CONTENT_TYPE = /^application\/grpc(\+[a-z]+)?(;.*)?$/i;
const GRPC_WEB_CONTENT_TYPE = /^application\/grpc-web(\+[a-z]+)?(;.*)?$/i;
const PARSE_FAILURE = "parse binary:";
const TRAILER_FLAG = 0x80;

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function fixed(message: string): ConnectError {
  return malformedMessageError(new ConnectError(message, Code.Internal));
}

/**
 * Wraps a unary method's handler so that a parse failure in its response is reported as
 * InvalidArgument; every other response passes through untouched.
 */
export function reportMalformedAsInvalid(handler: UniversalHandler): UniversalHandler {
  const wrapped = async (req: UniversalServerRequest) => rewrite(await handler(req), req.header.get("content-type") ?? "");
  return Object.assign(wrapped, handler);
}

async function rewrite(uRes: UniversalServerResponse, requestContentType: string): Promise<UniversalServerResponse> {
  const body = uRes.body;
  const iterable = body !== undefined && Symbol.asyncIterator in body ? body : undefined;
  if (GRPC_CONTENT_TYPE.test(requestContentType)) {
    const trailer = uRes.trailer;
    if (trailer === undefined) return uRes;
    const rewrite = () => rewriteGrpcTrailer(trailer);
    rewrite();
    return iterable === undefined ? uRes : { ...uRes, body: wrapStream(iterable, { end: (o) => o.kind === "ok" && rewrite() }) };
  }
  if (GRPC_WEB_CONTENT_TYPE.test(requestContentType)) {
    return iterable === undefined ? uRes : { ...uRes, body: wrapStream(iterable, { message: rewriteGrpcWebTrailerFrame }) };
  }
  const isJsonError = uRes.status === 500 && (uRes.header?.get("content-type") ?? "").startsWith("application/json");
  if (!isJsonError || iterable === undefined || uRes.header?.has("content-encoding") === true) return uRes;
  return rewriteConnectError(uRes, iterable);
}

function rewriteGrpcTrailer(trailer: Headers): void {
  if (trailer.get("grpc-status") !== String(Code.Internal)) return;
  const message = safeDecode(trailer.get("grpc-message") ?? "");
  if (!message.startsWith(PARSE_FAILURE)) return;
  const error = fixed(message);
  trailer.set("grpc-status", String(error.code));
  trailer.set("grpc-message", encodeURIComponent(error.rawMessage));
}

/** gRPC-Web sends the status in a final, uncompressed envelope of `key: value\r\n` lines. */
function rewriteGrpcWebTrailerFrame(chunk: Uint8Array): Uint8Array {
  if (chunk.byteLength < 5 || chunk[0] !== TRAILER_FLAG) return chunk;
  const lines = Buffer.from(chunk.subarray(5)).toString("latin1").split("\r\n").filter((l) => l !== "");
  const trailer = new Headers();
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) trailer.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const before = trailer.get("grpc-status");
  rewriteGrpcTrailer(trailer);
  if (trailer.get("grpc-status") === before) return chunk;
  let text = "";
  trailer.forEach((value, key) => (text += `${key}: ${value}\r\n`));
  const payload = Buffer.from(text, "latin1");
  const frame = Buffer.alloc(5 + payload.byteLength);
  frame[0] = TRAILER_FLAG;
  frame.writeUInt32BE(payload.byteLength, 1);
  payload.copy(frame, 5);
  return frame;
}

async function rewriteConnectError(uRes: UniversalServerResponse, body: AsyncIterable<Uint8Array>): Promise<UniversalServerResponse> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  let parsed: { code?: string; message?: string } | undefined;
  try {
    parsed = JSON.parse(bytes.toString("utf8")) as { code?: string; message?: string };
  } catch {
    parsed = undefined;
  }
  if (parsed?.code !== "internal" || parsed.message?.startsWith(PARSE_FAILURE) !== true) {
    return { ...uRes, body: single(bytes) };
  }
  const error = fixed(parsed.message);
  const out = Buffer.from(JSON.stringify({ code: codeName(error.code), message: error.rawMessage }));
  const header = new Headers(uRes.header);
  header.set("content-length", String(out.byteLength));
  return { ...uRes, status: 400, header, body: single(out) };
}

async function* single(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}
