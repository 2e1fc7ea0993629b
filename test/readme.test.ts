import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createRegistry, fromJsonString } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { file_keymesh_collection_v1_collection_service } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { file_keymesh_executor_v1_executor_service } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { file_keymesh_keys_v1_key_management_service } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { file_keymesh_signing_v1_signing_service } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";

const run = promisify(execFile);

/**
 * The README's `buf curl` and `curl` lines, run in order against a live `keymesh serve`
 * (embedded storage, like `npm start`), so the README cannot rot.
 */
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const lines = readme
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l.startsWith("npx buf curl ") || l.startsWith("curl "));

/** Splits a shell line into words, honouring single and double quotes (all the README uses). */
function words(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

/** Services whose README lines answer Unimplemented: none since every service is built. */
const UNBUILT: readonly string[] = [];

describe("README examples", () => {
  let server: KeymeshProcess;
  let base: string;
  let metrics: string;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-readme-"));
    // As `npm start` runs it: --dev writes the root token the README's lines read as $TOKEN.
    server = spawnKeymesh(["serve", "--port", "0", "--dev"], { KEYMESH_DATA_DIR: dataDir, KEYMESH_METRICS_PORT: "0" });
    base = String((await server.waitForLog((l) => l.msg === "keymesh serving")).url);
    metrics = String((await server.waitForLog((l) => l.msg === "serving metrics")).url);
  });
  afterAll(async () => {
    server?.child.kill("SIGTERM");
    await server?.exited;
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("has examples to run", () => {
    expect(lines.length).toBeGreaterThanOrEqual(10);
  });

  it("runs every buf curl and curl line against a live server", { timeout: 180_000 }, async () => {
    expect(readme).toContain("TOKEN=$(cat data/root-token)");
    const token = readFileSync(join(dataDir, "root-token"), "utf8").trim();
    for (const line of lines) {
      const [cmd, ...args] = words(
        line.replaceAll("http://localhost:8080", base).replaceAll("http://localhost:9464/metrics", metrics).replaceAll("$TOKEN", token),
      );
      const file = cmd === "npx" ? join("node_modules", ".bin", args.shift()!) : cmd!;
      const unbuilt = UNBUILT.some((p) => line.includes(p));
      const result = await run(file, args, { timeout: 15_000 }).then(
        (r) => ({ ok: true, out: r.stdout + r.stderr }),
        (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` }),
      );
      if (unbuilt) {
        expect(result.out, line).toContain("unimplemented");
        continue;
      }
      if (!line.includes("authorization") && line.includes("/keymesh.")) {
        expect(result.out, line).toContain("unauthenticated");
        continue;
      }
      expect(result.ok, `${line}\n${result.out}`).toBe(true);
      if (line.includes("--list-services")) expect(result.out).toContain("keymesh.executor.v1.ExecutorService");
      if (line.includes("Health/Check")) expect(result.out).toContain("SERVING");
      if (line.includes("/metrics")) expect(result.out).toContain("keymesh_records_signed_total");
      if (line.includes("RunJob")) expect(result.out).toContain("JOB_STATE_SUCCEEDED");
      if (line.includes("GetRecord")) expect(result.out).toMatch(/"signature"/);
      if (line.includes("SigningService/Verify")) expect(JSON.parse(result.out)).toEqual({});
      if (line.includes("AuthService/WhoAmI")) expect(JSON.parse(result.out)).toMatchObject({ principalId: "root", username: "root", admin: true });
    }
  });
});

/**
 * grpcurl is not installed where the tests run, so its README lines are checked against its
 * documented syntax instead (fullstorydev/grpcurl's README): every flag before the address
 * (`grpcurl [flags] host:port list|describe [symbol]|service/method`), a symbol or method the
 * server serves, and a `-d` body that is valid proto3 JSON for the method's request.
 */
describe("README grpcurl examples", () => {
  const registry = createRegistry(
    file_grpc_health_v1_health,
    file_keymesh_collection_v1_collection_service,
    file_keymesh_executor_v1_executor_service,
    file_keymesh_keys_v1_key_management_service,
    file_keymesh_signing_v1_signing_service,
  );
  const grpcurl = readme
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("grpcurl "));
  /** grpcurl flags that take a value (the rest used here are booleans). */
  const VALUE_FLAGS = new Set(["-d", "-H", "-proto", "-protoset", "-import-path", "-max-time", "-connect-timeout", "-authority"]);

  it("has examples", () => {
    expect(grpcurl.length).toBeGreaterThanOrEqual(5);
  });

  it.each(grpcurl)("%s", (line) => {
    const args = words(line).slice(1);
    const flags = new Map<string, string | true>();
    while (args[0]?.startsWith("-")) {
      const flag = args.shift()!;
      flags.set(flag, VALUE_FLAGS.has(flag) ? args.shift()! : true);
    }
    expect(flags.has("-plaintext"), "the server speaks h2c without TLS").toBe(true);
    const [address, verb, ...rest] = args;
    expect(address).toBe("localhost:8080");
    expect(args.slice(1).some((a) => a.startsWith("-")), "grpcurl wants every flag before the address").toBe(false);
    if (verb === "list") {
      expect(rest.length).toBeLessThanOrEqual(1);
      if (rest[0]) expect(registry.getService(rest[0])).toBeDefined();
      expect(flags.has("-d")).toBe(false);
      return;
    }
    if (verb === "describe") {
      expect(rest).toHaveLength(1);
      const [symbol] = rest as [string];
      const method = /^(.*)\.([^.]+)$/.exec(symbol);
      const found = registry.get(symbol) ?? registry.getService(method?.[1] ?? "")?.methods.find((m) => m.name === method?.[2]);
      expect(found, symbol).toBeDefined();
      return;
    }
    expect(rest).toEqual([]);
    const [service, name] = (verb ?? "").split("/");
    const method = registry.getService(service!)?.methods.find((m) => m.name === name);
    expect(method, verb).toBeDefined();
    const body = flags.get("-d");
    if (typeof body === "string") expect(() => fromJsonString(method!.input, body, { registry })).not.toThrow();
  });
});

