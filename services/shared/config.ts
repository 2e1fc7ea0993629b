import { resolve } from "node:path";
import { SERVICE_NAMES, type ServiceName } from "../registry.js";
import { MasterKeyConfigError, parseMasterKeys } from "./crypto/master-keys.js";

/**
 * Process configuration: every `KEYMESH_*` variable, parsed and validated once at start into a
 * frozen, typed object. A bad value is a `ConfigError` naming the variable and what it expects;
 * the CLI prints it and exits with status 2.
 */

/** Levels accepted by `KEYMESH_LOG_LEVEL` (pino's). */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/** A log level. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Certificate and key files for TLS (PEM). */
export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
}

/** The validated configuration of one keymesh process. */
export interface Config {
  /** KEYMESH_PORT: the one port serving gRPC, gRPC-Web and Connect (default 8080; 0 picks a free one). */
  readonly port: number;
  /** KEYMESH_HOST: the address to bind (default 127.0.0.1; 0.0.0.0 in containers). */
  readonly host: string;
  /** KEYMESH_DATA_DIR: embedded database and development keys (default ./data, made absolute). */
  readonly dataDir: string;
  /** KEYMESH_DATABASE_URL: `mysql://…` or `sqlite:…`; unset means SQLite under dataDir. */
  readonly databaseUrl: string | undefined;
  /** KEYMESH_DATABASE_REPLICA_URL: a `mysql://…` read replica for read-only RPCs. */
  readonly databaseReplicaUrl: string | undefined;
  /** KEYMESH_REDIS_URL: one `redis://…` URL, or several (comma-separated) for a Redlock quorum; empty: in-process. */
  readonly redisUrls: readonly string[];
  /** KEYMESH_REDIS_PREFIX: prefix of every Redis key keymesh writes (default "keymesh:"). */
  readonly redisPrefix: string;
  /** KEYMESH_TLS_CERT and KEYMESH_TLS_KEY: both or neither. */
  readonly tls: TlsConfig | undefined;
  /** KEYMESH_TLS_CA: CA certificate file (PEM) that peers' https:// certificates are checked against. */
  readonly tlsCaFile: string | undefined;
  /** KEYMESH_MAX_REQUEST_BYTES: largest accepted request message (default 4 MiB). */
  readonly maxRequestBytes: number;
  /** KEYMESH_SHUTDOWN_TIMEOUT_MS: how long a graceful shutdown may take in total (default 10000). */
  readonly shutdownTimeoutMs: number;
  /** KEYMESH_LOG_LEVEL (default info). */
  readonly logLevel: LogLevel;
  /** KEYMESH_SERVICE_TOKEN: shared secret that identifies service-to-service calls. */
  readonly serviceToken: string | undefined;
  /** KEYMESH_<NAME>_URL: where each peer service is; unset means this process's own address. */
  readonly serviceUrls: Readonly<Record<ServiceName, string | undefined>>;
  /** KEYMESH_MASTER_KEYS: `version:base64key,…`; unset means development keys in dataDir. */
  readonly masterKeys: string | undefined;
  /** KEYMESH_AUDIT_RETENTION_DAYS: audit events older than this are purged (default 90; 0 keeps them). */
  readonly auditRetentionDays: number;
  /** KEYMESH_AUDIT_KEY: base64 of the 32-byte key object ids are HMACed with; unset: one kept in the database. */
  readonly auditKey: string | undefined;
  /**
   * KEYMESH_REWRAP_CLAIM_IDLE_MS: how long a private-key rewrap chunk may stay unacknowledged
   * with a worker before another worker takes it over (default 30000).
   */
  readonly rewrapClaimIdleMs: number;
  /** KEYMESH_SIGNING_THREADS: worker threads the signing service signs on; unset: one per core (os.availableParallelism()). */
  readonly signingThreads: number | undefined;
  /** KEYMESH_METRICS_PORT: serve Prometheus metrics at /metrics on this port; unset: no endpoint. */
  readonly metricsPort: number | undefined;
  /** Unknown `KEYMESH_*` variables that were set (probably typos); the host warns about them. */
  readonly unknownVariables: readonly string[];
}

/** A configuration variable has a value keymesh cannot use. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    /** The variable at fault, e.g. `KEYMESH_PORT`. */
    readonly variable: string,
    /** What was expected, e.g. "an integer between 0 and 65535". */
    readonly expected: string,
  ) {
    super(`${variable}: expected ${expected}`);
  }
}

const DEFAULT_PORT = 8080;
const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;

/** The variable naming a service's URL, e.g. `KEYMESH_VAULT_URL`. */
export function serviceUrlVariable(name: ServiceName): string {
  return `KEYMESH_${name.toUpperCase()}_URL`;
}

/** Every variable `loadConfig` understands. */
export const KNOWN_VARIABLES: readonly string[] = [
  "KEYMESH_PORT",
  "KEYMESH_HOST",
  "KEYMESH_DATA_DIR",
  "KEYMESH_DATABASE_URL",
  "KEYMESH_DATABASE_REPLICA_URL",
  "KEYMESH_REDIS_URL",
  "KEYMESH_REDIS_PREFIX",
  "KEYMESH_TLS_CERT",
  "KEYMESH_TLS_KEY",
  "KEYMESH_TLS_CA",
  "KEYMESH_MAX_REQUEST_BYTES",
  "KEYMESH_SHUTDOWN_TIMEOUT_MS",
  "KEYMESH_LOG_LEVEL",
  "KEYMESH_SERVICE_TOKEN",
  "KEYMESH_MASTER_KEYS",
  "KEYMESH_METRICS_PORT",
  // Read by the CLI's client commands (KEYMESH_JAEGER_UI: `keymesh sign` prints a trace
  // link) and by the fault-injection failpoints.
  "KEYMESH_JAEGER_UI",
  "KEYMESH_AUDIT_RETENTION_DAYS",
  "KEYMESH_AUDIT_KEY",
  // The secrets client and its provider chain (services/shared/secrets).
  "KEYMESH_SECRETS_PROVIDER",
  "KEYMESH_SECRETS_URL",
  "KEYMESH_SECRETS_TOKEN",
  "KEYMESH_REWRAP_CLAIM_IDLE_MS",
  "KEYMESH_SIGNING_THREADS",
  "KEYMESH_URL",
  "KEYMESH_TOKEN",
  "KEYMESH_FAILPOINTS",
  ...SERVICE_NAMES.map(serviceUrlVariable),
];

/**
 * Variables read elsewhere (tests, the CLI's client commands) that `loadConfig` does not
 * parse but that are legitimate, so they are not reported as unknown.
 */
const OTHER_KNOWN_PREFIXES = ["KEYMESH_TEST_", "KEYMESH_CLI_", "KEYMESH_SECRET_"];

type Env = Readonly<Record<string, string | undefined>>;

function read(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number, what: string): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `${what} (an integer between ${min} and ${max}), got "${raw}"`);
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(name, `${what} (an integer between ${min} and ${max}), got ${raw}`);
  }
  return value;
}

function url(env: Env, name: string, schemes: readonly string[]): string | undefined {
  const raw = read(env, name);
  if (raw === undefined) return undefined;
  const expected = `a URL starting with ${schemes.map((s) => `${s}//`).join(" or ")}`;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, expected);
  }
  if (!schemes.includes(parsed.protocol)) throw new ConfigError(name, expected);
  return raw;
}

function databaseUrl(env: Env, name: string, allowSqlite: boolean): string | undefined {
  const raw = read(env, name);
  if (raw === undefined) return undefined;
  const expected = allowSqlite ? "mysql://user:password@host:port/database or sqlite:/path/file.sqlite" : "mysql://user:password@host:port/database";
  if (allowSqlite && raw.startsWith("sqlite:")) {
    if (raw.slice("sqlite:".length).replace(/^\/\//, "") === "") throw new ConfigError(name, expected);
    return raw;
  }
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, expected);
  }
  if (parsed.protocol !== "mysql:" || parsed.pathname.replace(/^\//, "") === "") throw new ConfigError(name, expected);
  return raw;
}

function redisUrls(env: Env): string[] {
  const raw = read(env, "KEYMESH_REDIS_URL");
  if (raw === undefined) return [];
  const urls = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const u of urls) {
    let ok = false;
    try {
      ok = ["redis:", "rediss:"].includes(new URL(u).protocol);
    } catch {
      ok = false;
    }
    if (!ok) throw new ConfigError("KEYMESH_REDIS_URL", "redis://host:port or a comma-separated list of them");
  }
  return urls;
}

function redisPrefix(env: Env): string {
  const raw = read(env, "KEYMESH_REDIS_PREFIX") ?? "keymesh:";
  if (!/^[A-Za-z0-9:._-]{1,64}$/.test(raw)) throw new ConfigError("KEYMESH_REDIS_PREFIX", "1-64 characters of letters, digits, ':', '.', '_' and '-'");
  return raw;
}

function tls(env: Env): TlsConfig | undefined {
  const certFile = read(env, "KEYMESH_TLS_CERT");
  const keyFile = read(env, "KEYMESH_TLS_KEY");
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined) throw new ConfigError("KEYMESH_TLS_CERT", "a certificate file when KEYMESH_TLS_KEY is set (both or neither)");
  if (keyFile === undefined) throw new ConfigError("KEYMESH_TLS_KEY", "a private key file when KEYMESH_TLS_CERT is set (both or neither)");
  return { certFile: resolve(certFile), keyFile: resolve(keyFile) };
}

function optionalPath(env: Env, name: string): string | undefined {
  const raw = read(env, name);
  return raw === undefined ? undefined : resolve(raw);
}

function logLevel(env: Env): LogLevel {
  const raw = read(env, "KEYMESH_LOG_LEVEL")?.toLowerCase() ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new ConfigError("KEYMESH_LOG_LEVEL", `one of ${LOG_LEVELS.join(", ")}`);
  return raw as LogLevel;
}

function host(env: Env): string {
  const raw = read(env, "KEYMESH_HOST") ?? "127.0.0.1";
  if (!/^[A-Za-z0-9.:\-[\]%]+$/.test(raw)) throw new ConfigError("KEYMESH_HOST", "a host name or IP address to bind");
  return raw;
}

function masterKeys(env: Env): string | undefined {
  const raw = read(env, "KEYMESH_MASTER_KEYS");
  if (raw === undefined) return undefined;
  try {
    parseMasterKeys(raw);
  } catch (err) {
    // The message names the entry at fault, never the key material.
    const detail = err instanceof MasterKeyConfigError ? err.message.replace(/^KEYMESH_MASTER_KEYS:?\s*/, "") : "a valid key list";
    throw new ConfigError("KEYMESH_MASTER_KEYS", `comma-separated version:base64key entries of 32-byte keys (${detail})`);
  }
  return raw;
}

function auditKey(env: Env): string | undefined {
  const raw = read(env, "KEYMESH_AUDIT_KEY");
  if (raw === undefined) return undefined;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(raw) || Buffer.from(raw, "base64").length !== 32) {
    throw new ConfigError("KEYMESH_AUDIT_KEY", "the base64 encoding of 32 random bytes (openssl rand -base64 32)");
  }
  return raw;
}

function serviceToken(env: Env): string | undefined {
  const raw = read(env, "KEYMESH_SERVICE_TOKEN");
  if (raw === undefined) return undefined;
  if (raw.length < 16 || /\s/.test(raw)) throw new ConfigError("KEYMESH_SERVICE_TOKEN", "a secret of at least 16 characters without whitespace");
  return raw;
}

function unknownVariables(env: Env): string[] {
  const known = new Set(KNOWN_VARIABLES);
  return Object.keys(env)
    .filter((k) => k.startsWith("KEYMESH_") && !known.has(k) && !OTHER_KNOWN_PREFIXES.some((p) => k.startsWith(p)))
    .sort();
}

/**
 * Overrides that take precedence over the environment (command-line flags such as `--port`).
 */
export interface ConfigOverrides {
  readonly port?: string;
  readonly host?: string;
}

/** Parses and validates the `KEYMESH_*` variables of `env`; throws `ConfigError`. */
export function loadConfig(env: Env = process.env, overrides: ConfigOverrides = {}): Config {
  const merged: Env = {
    ...env,
    ...(overrides.port === undefined ? {} : { KEYMESH_PORT: overrides.port }),
    ...(overrides.host === undefined ? {} : { KEYMESH_HOST: overrides.host }),
  };
  const serviceUrls = Object.fromEntries(
    SERVICE_NAMES.map((name) => [name, url(merged, serviceUrlVariable(name), ["http:", "https:"])]),
  ) as Record<ServiceName, string | undefined>;
  const config: Config = {
    port: integer(merged, "KEYMESH_PORT", DEFAULT_PORT, 0, 65535, "a TCP port"),
    host: host(merged),
    dataDir: resolve(read(merged, "KEYMESH_DATA_DIR") ?? "./data"),
    databaseUrl: databaseUrl(merged, "KEYMESH_DATABASE_URL", true),
    databaseReplicaUrl: databaseUrl(merged, "KEYMESH_DATABASE_REPLICA_URL", false),
    redisUrls: Object.freeze(redisUrls(merged)),
    redisPrefix: redisPrefix(merged),
    tls: tls(merged),
    tlsCaFile: optionalPath(merged, "KEYMESH_TLS_CA"),
    maxRequestBytes: integer(merged, "KEYMESH_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, 1024, 0xffffffff, "a size in bytes"),
    shutdownTimeoutMs: integer(merged, "KEYMESH_SHUTDOWN_TIMEOUT_MS", DEFAULT_SHUTDOWN_TIMEOUT_MS, 100, 3_600_000, "a duration in milliseconds"),
    rewrapClaimIdleMs: integer(merged, "KEYMESH_REWRAP_CLAIM_IDLE_MS", 30_000, 500, 3_600_000, "a duration in milliseconds"),
    signingThreads: read(merged, "KEYMESH_SIGNING_THREADS") === undefined ? undefined : integer(merged, "KEYMESH_SIGNING_THREADS", 0, 1, 256, "a number of threads"),
    logLevel: logLevel(merged),
    serviceToken: serviceToken(merged),
    serviceUrls: Object.freeze(serviceUrls),
    masterKeys: masterKeys(merged),
    auditRetentionDays: integer(merged, "KEYMESH_AUDIT_RETENTION_DAYS", 90, 0, 36_500, "a number of days"),
    auditKey: auditKey(merged),
    metricsPort: read(merged, "KEYMESH_METRICS_PORT") === undefined ? undefined : integer(merged, "KEYMESH_METRICS_PORT", 0, 0, 65535, "a TCP port"),
    unknownVariables: Object.freeze(unknownVariables(env)),
  };
  if (config.metricsPort !== undefined && config.metricsPort !== 0 && config.metricsPort === config.port) {
    throw new ConfigError("KEYMESH_METRICS_PORT", `a port other than KEYMESH_PORT (${config.port} serves gRPC and Connect only)`);
  }
  if (config.databaseReplicaUrl !== undefined && !config.databaseUrl?.startsWith("mysql:")) {
    throw new ConfigError("KEYMESH_DATABASE_REPLICA_URL", "to be set only together with a mysql:// KEYMESH_DATABASE_URL");
  }
  return Object.freeze(config);
}

/** A copy of the configuration safe to log: secrets and passwords are masked. */
export function redactConfig(config: Config): Record<string, unknown> {
  const mask = (u: string | undefined) => (u === undefined ? undefined : u.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@"));
  return {
    ...config,
    databaseUrl: mask(config.databaseUrl),
    databaseReplicaUrl: mask(config.databaseReplicaUrl),
    redisUrls: config.redisUrls.map((u) => mask(u)),
    serviceToken: config.serviceToken === undefined ? undefined : "***",
    masterKeys: config.masterKeys === undefined ? undefined : "***",
    auditKey: config.auditKey === undefined ? undefined : "***",
  };
}
