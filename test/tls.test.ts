import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import { bidiAll, grpc, grpcClient, unary } from "./support/grpc.js";
import { startTestHost, type TestHost } from "./support/host.js";

let dir: string;
let cert: Buffer;
let server: TestHost;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keymesh-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  cert = readFileSync(join(dir, "cert.pem"));
  server = await startTestHost({ env: { KEYMESH_TLS_CERT: join(dir, "cert.pem"), KEYMESH_TLS_KEY: join(dir, "key.pem") } });
});

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("TLS", () => {
  it("serves gRPC over TLS to grpc-js", async () => {
    const client = grpcClient(`localhost:${server.host.port}`, grpc.credentials.createSsl(cert));
    try {
      const res = await unary(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
      expect(res.status).toBe(Status.SERVING);
      const [listed] = await bidiAll(client, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", v1.ServerReflectionRequestSchema, v1.ServerReflectionResponseSchema, [
        { messageRequest: { case: "listServices", value: "" } },
      ]);
      expect((listed?.messageResponse.value as v1.ListServiceResponse).service.map((s) => s.name)).toContain("keymesh.vault.v1.VaultService");
    } finally {
      client.close();
    }
  });

  it("serves the Connect protocol over HTTP/1.1 with TLS (ALPN)", async () => {
    const body = await new Promise<{ status: number | undefined; text: string; version: string }>((resolve, reject) => {
      const req = request(
        `${server.url}/grpc.health.v1.Health/Check`,
        { method: "POST", ca: cert, headers: { "content-type": "application/json" } },
        (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode, text, version: res.httpVersion }));
        },
      );
      req.on("error", reject);
      req.end("{}");
    });
    expect(body).toEqual({ status: 200, text: '{"status":"SERVING"}', version: "1.1" });
  });

  it("lets peer clients reach this process over TLS", async () => {
    expect(server.url).toMatch(/^https:\/\/localhost:\d+$/);
    const err = await server.host.clients.vault.getSecret({}).catch((e: unknown) => ConnectError.from(e));
    expect(err).toMatchObject({ code: Code.Unimplemented });
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url, nodeOptions: { ca: cert } }));
    expect((await health.check({})).status).toBe(Status.SERVING);
  });
});
