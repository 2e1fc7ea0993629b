import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, redactConfig } from "../services/shared/config.js";
import { spawnKeymesh } from "./support/process.js";

const KEY = Buffer.alloc(32, 7).toString("base64");

describe("loadConfig", () => {
  it("has working defaults", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      host: "127.0.0.1",
      redisUrls: [],
      tls: undefined,
      maxRequestBytes: 4 * 1024 * 1024,
      shutdownTimeoutMs: 10_000,
      logLevel: "info",
    });
    expect(config.dataDir).toMatch(/\/data$/);
    expect(Object.isFrozen(config)).toBe(true);
    expect(config.serviceUrls.vault).toBeUndefined();
  });

  it("parses every variable", () => {
    const config = loadConfig({
      KEYMESH_PORT: "9090",
      KEYMESH_HOST: "0.0.0.0",
      KEYMESH_DATA_DIR: "/tmp/km",
      KEYMESH_DATABASE_URL: "mysql://root:secret@127.0.0.1:3306/test",
      KEYMESH_DATABASE_REPLICA_URL: "mysql://root@127.0.0.2:3306/test",
      KEYMESH_REDIS_URL: "redis://a:6379, redis://b:6379,redis://c:6379",
      KEYMESH_TLS_CERT: "/c.pem",
      KEYMESH_TLS_KEY: "/k.pem",
      KEYMESH_MAX_REQUEST_BYTES: "1048576",
      KEYMESH_SHUTDOWN_TIMEOUT_MS: "2500",
      KEYMESH_LOG_LEVEL: "DEBUG",
      KEYMESH_SERVICE_TOKEN: "0123456789abcdef0123",
      KEYMESH_VAULT_URL: "http://vault:8080",
      KEYMESH_MASTER_KEYS: `1:${KEY}`,
      KEYMESH_JAEGER_UI: "http://localhost:16686",
      KEYMESH_TLS_CA: "/ca.pem",
      KEYMESH_REDIS_PREFIX: "km-test:",
    });
    expect(config).toMatchObject({
      tlsCaFile: "/ca.pem",
      redisPrefix: "km-test:",
      port: 9090,
      host: "0.0.0.0",
      dataDir: "/tmp/km",
      redisUrls: ["redis://a:6379", "redis://b:6379", "redis://c:6379"],
      tls: { certFile: "/c.pem", keyFile: "/k.pem" },
      maxRequestBytes: 1048576,
      shutdownTimeoutMs: 2500,
      logLevel: "debug",
      serviceUrls: { vault: "http://vault:8080", keys: undefined },
    });
    const redacted = JSON.stringify(redactConfig(config));
    expect(redacted).not.toContain("secret");
    expect(redacted).not.toContain(KEY);
    expect(redacted).not.toContain("0123456789abcdef0123");
  });

  it.each([
    [{ KEYMESH_PORT: "http" }, "KEYMESH_PORT"],
    [{ KEYMESH_PORT: "70000" }, "KEYMESH_PORT"],
    [{ KEYMESH_TLS_CERT: "/c.pem" }, "KEYMESH_TLS_KEY"],
    [{ KEYMESH_TLS_KEY: "/k.pem" }, "KEYMESH_TLS_CERT"],
    [{ KEYMESH_DATABASE_URL: "postgres://x/y" }, "KEYMESH_DATABASE_URL"],
    [{ KEYMESH_DATABASE_REPLICA_URL: "mysql://r/test" }, "KEYMESH_DATABASE_REPLICA_URL"],
    [{ KEYMESH_REDIS_URL: "localhost:6379" }, "KEYMESH_REDIS_URL"],
    [{ KEYMESH_MAX_REQUEST_BYTES: "-1" }, "KEYMESH_MAX_REQUEST_BYTES"],
    [{ KEYMESH_SHUTDOWN_TIMEOUT_MS: "soon" }, "KEYMESH_SHUTDOWN_TIMEOUT_MS"],
    [{ KEYMESH_LOG_LEVEL: "loud" }, "KEYMESH_LOG_LEVEL"],
    [{ KEYMESH_SERVICE_TOKEN: "short" }, "KEYMESH_SERVICE_TOKEN"],
    [{ KEYMESH_KEYS_URL: "keys:8080" }, "KEYMESH_KEYS_URL"],
    [{ KEYMESH_REDIS_PREFIX: "has space" }, "KEYMESH_REDIS_PREFIX"],
    [{ KEYMESH_MASTER_KEYS: "1:c2hvcnQ=" }, "KEYMESH_MASTER_KEYS"],
  ])("rejects %o naming %s", (env, variable) => {
    let error: unknown;
    try {
      loadConfig(env);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).variable).toBe(variable);
    expect((error as ConfigError).message).toContain(variable);
  });

  it("reports unknown KEYMESH_* variables", () => {
    expect(loadConfig({ KEYMESH_PROT: "1", KEYMESH_PORT: "1" }).unknownVariables).toEqual(["KEYMESH_PROT"]);
  });

  it("lets flags override the environment", () => {
    expect(loadConfig({ KEYMESH_PORT: "1" }, { port: "2", host: "::" })).toMatchObject({ port: 2, host: "::" });
  });
});

describe.concurrent("keymesh serve with a bad configuration", () => {
  it.each([
    [{ KEYMESH_PORT: "eighty" }, "KEYMESH_PORT"],
    [{ KEYMESH_TLS_CERT: "/tmp/cert.pem" }, "KEYMESH_TLS_KEY"],
  ])("exits 2 naming the variable (%o)", async (env, variable) => {
    const proc = spawnKeymesh(["serve"], env);
    const { code } = await proc.exited;
    expect(code).toBe(2);
    expect(proc.stderr()).toContain(variable);
  });

  it("exits 2 for an unknown service", async () => {
    const proc = spawnKeymesh(["serve", "nope"], { KEYMESH_PORT: "0" });
    expect((await proc.exited).code).toBe(2);
    expect(proc.stderr()).toContain('unknown service "nope"');
  });
});
