#!/usr/bin/env node
// Container health check for a keymesh server: one grpc.health.v1.Health/Check call to this
// process's own port, exit status 0 only when the answer is SERVING.
//
//   node deploy/healthcheck.mjs [service]
//
// `service` is a full service name (e.g. keymesh.vault.v1.VaultService); empty or absent asks
// about the whole server. The address comes from the same variables the server reads:
// KEYMESH_PORT (default 8080) and KEYMESH_HOST (a wildcard bind address means loopback); TLS
// is used when KEYMESH_TLS_CERT is set (the certificate is not verified: this is a loopback
// liveness probe, not a client). Plain JavaScript with no dependencies, so it runs without the
// TypeScript loader and starts in a few milliseconds. Kubernetes uses its native gRPC probes
// instead.
import { connect } from "node:http2";

const TIMEOUT_MS = 3_000;
const STATUS_NAMES = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
const SERVING = 1;

function fail(message) {
  process.stderr.write(`unhealthy: ${message}\n`);
  process.exit(1);
}

function target(env) {
  const rawPort = (env.KEYMESH_PORT ?? "").trim() || "8080";
  const port = Number(rawPort);
  if (!/^\d+$/.test(rawPort) || port < 1 || port > 65535) fail(`KEYMESH_PORT is not a usable port: "${rawPort}"`);
  let host = (env.KEYMESH_HOST ?? "").trim();
  if (host === "" || host === "0.0.0.0") host = "127.0.0.1";
  else if (host === "::" || host === "[::]") host = "[::1]";
  else if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  const tls = (env.KEYMESH_TLS_CERT ?? "").trim() !== "";
  return `${tls ? "https" : "http"}://${host}:${port}`;
}

function varint(value) {
  const bytes = [];
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
  return bytes;
}

/** HealthCheckRequest { string service = 1; } in a gRPC length-prefixed frame. */
function encodeRequest(service) {
  const name = Buffer.from(service, "utf8");
  const message = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, ...varint(name.length)]), name]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

function readVarint(buf, offset) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (offset >= buf.length || shift > 28) throw new Error("malformed varint");
    const byte = buf[offset++];
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return [value, offset];
    shift += 7;
  }
}

/** HealthCheckResponse { ServingStatus status = 1; } from the first gRPC frame of `body`. */
function decodeStatus(body) {
  if (body.length < 5) throw new Error("no response message");
  if (body[0] !== 0) throw new Error("compressed response");
  const length = body.readUInt32BE(1);
  const message = body.subarray(5, 5 + length);
  if (message.length !== length) throw new Error("truncated response message");
  let status = 0; // proto3 default: UNKNOWN
  for (let offset = 0; offset < message.length; ) {
    let tag;
    [tag, offset] = readVarint(message, offset);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      let value;
      [value, offset] = readVarint(message, offset);
      if (field === 1) status = value;
    } else if (wire === 2) {
      let size;
      [size, offset] = readVarint(message, offset);
      offset += size;
    } else if (wire === 1) offset += 8;
    else if (wire === 5) offset += 4;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return status;
}

const authority = target(process.env);
const service = process.argv[2] ?? "";
const timer = setTimeout(() => fail(`no answer from ${authority} within ${TIMEOUT_MS} ms`), TIMEOUT_MS);
timer.unref();

const session = connect(authority, { rejectUnauthorized: false });
const describe = (err) => `${authority}: ${err.cause?.code ?? err.code ?? err.message}`;
session.on("error", (err) => fail(describe(err)));
const stream = session.request({
  ":method": "POST",
  ":path": "/grpc.health.v1.Health/Check",
  "content-type": "application/grpc+proto",
  te: "trailers",
  "grpc-accept-encoding": "identity",
  "grpc-timeout": `${TIMEOUT_MS}m`,
  "user-agent": "keymesh-healthcheck",
});
const chunks = [];
let grpcStatus;
let grpcMessage = "";
const takeStatus = (headers) => {
  if (headers["grpc-status"] !== undefined) {
    grpcStatus = Number(headers["grpc-status"]);
    const raw = String(headers["grpc-message"] ?? "");
    try {
      grpcMessage = decodeURIComponent(raw);
    } catch {
      grpcMessage = raw;
    }
  }
};
stream.on("response", (headers) => {
  if (headers[":status"] !== 200) fail(`HTTP status ${headers[":status"]} from ${authority}`);
  takeStatus(headers); // a trailers-only response carries the status in the headers
});
stream.on("trailers", takeStatus);
stream.on("data", (chunk) => chunks.push(chunk));
stream.on("error", (err) => fail(describe(err)));
stream.on("end", () => {
  session.close();
  if (grpcStatus === undefined) fail("the response has no grpc-status");
  if (grpcStatus !== 0) fail(`gRPC status ${grpcStatus}${grpcMessage ? ` (${grpcMessage})` : ""}`);
  let status;
  try {
    status = decodeStatus(Buffer.concat(chunks));
  } catch (err) {
    fail(err.message);
  }
  const name = STATUS_NAMES[status] ?? String(status);
  if (status !== SERVING) fail(`${service || "server"} is ${name}`);
  process.stdout.write(`${service || "server"} is ${name}\n`);
  process.exit(0);
});
stream.end(encodeRequest(service));
