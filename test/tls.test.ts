import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
import { placeholderModules } from "./support/placeholders.js";

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

describe("service-to-service TLS with a mesh CA", () => {
  let caDir: string;
  const token = "kms_tls-mesh-service-token-0001";
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });

  beforeAll(() => {
    caDir = mkdtempSync(join(tmpdir(), "keymesh-ca-"));
    const at = (f: string) => join(caDir, f);
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-keyout", at("ca-key.pem"), "-out", at("ca.pem"), "-subj", "/CN=keymesh test CA");
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", at("keys-key.pem"), "-out", at("keys.csr"), "-subj", "/CN=localhost");
    writeFileSync(at("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    openssl("x509", "-req", "-in", at("keys.csr"), "-CA", at("ca.pem"), "-CAkey", at("ca-key.pem"), "-CAcreateserial",
      "-days", "1", "-extfile", at("ext.cnf"), "-out", at("keys.pem"));
    // A CA that signed nothing here: trusting it must not be enough.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-keyout", at("other-key.pem"), "-out", at("other-ca.pem"), "-subj", "/CN=another CA");
  });
  afterAll(() => rmSync(caDir, { recursive: true, force: true }));

  it("reaches an https:// peer whose certificate KEYMESH_TLS_CA vouches for, with the service token", async () => {
    const keys = await startTestHost({
      services: placeholderModules(["keys"]),
      env: { KEYMESH_TLS_CERT: join(caDir, "keys.pem"), KEYMESH_TLS_KEY: join(caDir, "keys-key.pem"), KEYMESH_SERVICE_TOKEN: token },
    });
    const peerEnv = (ca: string) => ({ KEYMESH_KEYS_URL: keys.url, KEYMESH_TLS_CA: join(caDir, ca), KEYMESH_SERVICE_TOKEN: token });
    const executor = await startTestHost({ services: placeholderModules(["executor"]), env: peerEnv("ca.pem") });
    const stranger = await startTestHost({ services: placeholderModules(["executor"]), env: peerEnv("other-ca.pem") });
    try {
      expect(keys.url).toMatch(/^https:\/\/localhost:\d+$/);
      // Unimplemented: the placeholder answered, so TLS and the service token were accepted.
      expect(await executor.host.clients.keys.acquireKeyLease({}).catch((e: unknown) => ConnectError.from(e))).toMatchObject({ code: Code.Unimplemented });
      // A CA that did not sign the peer's certificate: the call never gets through.
      const err = await stranger.host.clients.keys.acquireKeyLease({}).then(() => undefined, (e: unknown) => ConnectError.from(e));
      expect(err?.code, err?.message).not.toBe(Code.Unimplemented);
      expect(err?.message).toMatch(/certificate/i);
    } finally {
      await Promise.all([executor.close(), stranger.close()]);
      await keys.close();
    }
  });

  it("refuses to start with a plaintext peer URL when TLS is configured", async () => {
    await expect(
      startTestHost({ services: placeholderModules(["executor"]), env: { KEYMESH_KEYS_URL: "http://127.0.0.1:9", KEYMESH_TLS_CA: join(caDir, "ca.pem") } }),
    ).rejects.toThrow(/KEYMESH_KEYS_URL: expected an https:\/\/ URL/);
  });
});
