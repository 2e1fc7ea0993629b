import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestHost, type TestHost } from "./support/host.js";

const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));
const run = promisify(execFile);

let server: TestHost;

beforeAll(async () => {
  server = await startTestHost();
});

afterAll(async () => {
  await server.close();
});

/** Runs `buf curl`; resolves with its output whether it succeeded or not. */
async function bufCurl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(BUF, ["curl", ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("buf curl (reflection clients)", () => {
  it("lists the services through reflection", async () => {
    const res = await bufCurl("--http2-prior-knowledge", "--list-services", server.url);
    expect(res.code).toBe(0);
    const names = res.stdout.trim().split("\n").sort();
    expect(names).toEqual([
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "keymesh.auth.v1.AuthService",
      "keymesh.collection.v1.CollectionService",
      "keymesh.executor.v1.ExecutorService",
      "keymesh.keys.v1.KeyManagementService",
      "keymesh.messages.v1.MessagesService",
      "keymesh.signing.v1.SigningService",
      "keymesh.vault.v1.VaultService",
    ]);
  });

  it("lists methods and calls one with JSON over each protocol", async () => {
    const methods = await bufCurl("--http2-prior-knowledge", "--list-methods", server.url);
    expect(methods.stdout).toContain("keymesh.vault.v1.VaultService/CreateSecret");
    for (const protocol of ["connect", "grpc", "grpcweb"]) {
      const res = await bufCurl("--http2-prior-knowledge", "--protocol", protocol, "-d", "{}", `${server.url}/grpc.health.v1.Health/Check`);
      expect(res.code, `${protocol}: ${res.stderr}`).toBe(0);
      expect(JSON.parse(res.stdout)).toEqual({ status: "SERVING" });
    }
  });

  it("reports Unimplemented for a keymesh RPC without a handler, with credentials", async () => {
    const res = await bufCurl("--http2-prior-knowledge", "-H", `authorization: Bearer ${server.token}`, "-d", "{}", `${server.url}/keymesh.vault.v1.VaultService/CreateSecret`);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("unimplemented");
  });

  it("reports Unauthenticated for a keymesh RPC called without credentials", async () => {
    const res = await bufCurl("--http2-prior-knowledge", "-d", "{}", `${server.url}/keymesh.vault.v1.VaultService/CreateSecret`);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("unauthenticated");
  });
});
