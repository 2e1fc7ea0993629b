import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../gen/grpc/health/v1/health_pb.js";
import { CreateSecretRequestSchema, CreateSecretResponseSchema } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { grpc, grpcClient, unary, unaryRaw, withToken } from "./support/grpc.js";
import { startTestHost, type TestHost } from "./support/host.js";

const MAX = 64 * 1024;

let server: TestHost;
let client: grpc.Client;

beforeAll(async () => {
  server = await startTestHost({ env: { KEYMESH_MAX_REQUEST_BYTES: String(MAX) } });
  client = grpcClient(server.address, undefined, withToken(server.token));
});

afterAll(async () => {
  client.close();
  await server.close();
});

const check = (service = "") =>
  unary(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, { service });

/** A Connect-protocol JSON call over HTTP/1.1 (Node's fetch never speaks HTTP/2). */
const postJson = (path: string, body: string, headers: Record<string, string> = {}) =>
  fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });

describe("gRPC over HTTP/2 (grpc-js)", () => {
  it("gets UNIMPLEMENTED from a keymesh RPC without a handler", async () => {
    await expect(
      unary(client, "/keymesh.vault.v1.VaultService/CreateSecret", CreateSecretRequestSchema, CreateSecretResponseSchema, {}),
    ).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED });
  });

  it("gets UNIMPLEMENTED for a method no service has", async () => {
    await expect(unaryRaw(client, "/keymesh.nope.v1.Nope/Nothing", Buffer.alloc(0))).rejects.toMatchObject({
      code: grpc.status.UNIMPLEMENTED,
    });
  });

  it("echoes a request id", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", "req-123");
    const headers = await new Promise<grpc.Metadata>((resolve, reject) => {
      const call = client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (m: Buffer) => m,
        (b: Buffer) => b,
        Buffer.alloc(0),
        metadata,
        (err) => err && reject(err),
      );
      call.on("metadata", resolve);
    });
    expect(headers.get("x-request-id")).toEqual(["req-123"]);
  });

  it("refuses an oversize message with RESOURCE_EXHAUSTED and keeps serving", async () => {
    await expect(check("x".repeat(MAX + 1))).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    expect((await check()).status).toBe(Status.SERVING);
  });

  it("refuses a malformed message with INVALID_ARGUMENT and keeps serving", async () => {
    // Field 1 (string) announcing 100 bytes that never come.
    await expect(unaryRaw(client, "/grpc.health.v1.Health/Check", Buffer.from([0x0a, 0x64, 0x01]))).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    expect((await check()).status).toBe(Status.SERVING);
  });
});

describe("malformed messages on a stream (grpc-js)", () => {
  it("end the call with INVALID_ARGUMENT", async () => {
    const call = client.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (b: Buffer) => b,
      (b: Buffer) => b,
    );
    const err = new Promise((resolve) => call.on("error", resolve));
    call.on("data", () => undefined);
    call.write(Buffer.from([0x0a, 0x64, 0x01]));
    call.end();
    expect(await err).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });
});

describe("Connect protocol over HTTP/1.1 (fetch)", () => {
  it("serves JSON", async () => {
    const res = await postJson("/grpc.health.v1.Health/Check", "{}");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(await res.json()).toEqual({ status: "SERVING" });
  });

  it("answers an unimplemented keymesh RPC with the Connect error JSON", async () => {
    const res = await postJson("/keymesh.vault.v1.VaultService/CreateSecret", "{}", { "connect-protocol-version": "1", authorization: `Bearer ${server.token}` });
    expect(res.status).toBe(501);
    expect(await res.json()).toMatchObject({ code: "unimplemented" });
  });

  it("answers invalid JSON with invalid_argument", async () => {
    const res = await postJson("/grpc.health.v1.Health/Check", "{not json");
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: "invalid_argument" });
    expect((await postJson("/grpc.health.v1.Health/Check", "{}")).status).toBe(200);
  });

  it("answers malformed binary protobuf with invalid_argument", async () => {
    const res = await fetch(`${server.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: new Uint8Array([0x0a, 0x64, 0x01]),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: "invalid_argument" });
  });

  it("answers malformed protobuf over gRPC-Web with INVALID_ARGUMENT in the trailer frame", async () => {
    const message = [0x0a, 0x64, 0x01];
    const res = await fetch(`${server.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto" },
      body: new Uint8Array([0, 0, 0, 0, message.length, ...message]),
    });
    const body = Buffer.from(await res.arrayBuffer());
    expect(body[0]).toBe(0x80);
    expect(body.subarray(5).toString("latin1")).toMatch(/grpc-status: 3\r\n/);
  });

  it("answers an oversize body with resource_exhausted", async () => {
    const res = await postJson("/grpc.health.v1.Health/Check", JSON.stringify({ service: "x".repeat(MAX + 1) }));
    expect(await res.json()).toMatchObject({ code: "resource_exhausted" });
    expect((await postJson("/grpc.health.v1.Health/Check", "{}")).status).toBe(200);
  });

  it("serves binary protobuf", async () => {
    const res = await fetch(`${server.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "" })),
    });
    expect(res.status).toBe(200);
  });
});

describe("generated connect-es clients", () => {
  it("work over gRPC (HTTP/2) and Connect (HTTP/1.1)", async () => {
    const grpcHealth = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    expect((await grpcHealth.check({})).status).toBe(Status.SERVING);
    const connectHealth = createClient(Health, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    expect((await connectHealth.check({})).status).toBe(Status.SERVING);
    const err = await connectHealth.check({ service: "nope" }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toMatchObject({ code: Code.NotFound });
  });
});

describe("Connect protocol over HTTP/2", () => {
  it("refuses an oversize message with resource_exhausted without leaving the stream open", async () => {
    const health = createClient(Health, createConnectTransport({ baseUrl: server.url, httpVersion: "2" }));
    const err = await health.check({ service: "x".repeat(MAX * 2) }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toMatchObject({ code: Code.ResourceExhausted });
    expect((await health.check({})).status).toBe(Status.SERVING);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(server.host.inFlight()).toBe(0);
  });
});
