import { mkdirSync } from "node:fs";
import { join } from "node:path";
import knex, { type Knex } from "knex";
import { UnavailableError } from "../errors.js";
import { dbUnavailableCode } from "./errors.js";

/** Converts a transient database failure into `UnavailableError`; returns any other error unchanged. */
export function toDbError(err: unknown): unknown {
  if (err instanceof UnavailableError) return err;
  const code = dbUnavailableCode(err);
  if (code === undefined) return err;
  return new UnavailableError("database", `database unavailable (${code})`, { cause: err, driverCode: code });
}

/** The two SQL dialects keymesh runs on. */
export type Dialect = "mysql" | "sqlite";

/** Connection-pool settings; each has a sensible default per dialect. */
export interface PoolConfig {
  /** Connections kept open when idle (MySQL default 0; SQLite 1). */
  readonly min?: number;
  /** Upper bound of open connections (MySQL default 10; SQLite 1: one writer, no upgrade deadlocks). */
  readonly max?: number;
  /** How long a query waits for a free connection before failing with UnavailableError (default 10 s). */
  readonly acquireTimeoutMs?: number;
  /** Idle connections above `min` are closed after this long (default 30 s). */
  readonly idleTimeoutMs?: number;
}

/** Where the data lives. */
export interface DatabaseConfig {
  /**
   * `mysql://user:pass@host:port/db` for MySQL 8 / MariaDB ≥ 10.6. Also accepted:
   * `sqlite:/path/file.sqlite` and `sqlite::memory:`. Unset: SQLite under `dataDir`.
   */
  readonly url?: string;
  /** A read replica (`mysql://…`) for read-only RPCs; unset: reads go to the primary. */
  readonly replicaUrl?: string;
  /** Directory of the embedded SQLite file `keymesh.sqlite`; created when missing. */
  readonly dataDir: string;
  readonly pool?: PoolConfig;
  /** TCP connect timeout for MySQL (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** Receives knex's own warnings (e.g. pool errors); default: knex prints to the console. */
  readonly logger?: Knex.Logger;
}

/** An open database: a primary for writes, a replica (or the primary again) for reads. */
export interface Database {
  readonly primary: Knex;
  /** Read-only traffic; the same instance as `primary` when no replica is configured. */
  readonly replica: Knex;
  readonly dialect: Dialect;
  /** Closes every pool; safe to call more than once. */
  close(): Promise<void>;
}

const SQLITE_FILE = "keymesh.sqlite";
const SQLITE_BUSY_TIMEOUT_MS = 5_000;

/** Parses `mysql://user:pass@host:port/db?…` into mysql2 connection options. */
function mysqlConnection(url: string, config: DatabaseConfig): Knex.MySql2ConnectionConfig {
  const u = new URL(url);
  if (u.protocol !== "mysql:") throw new Error(`unsupported database URL scheme "${u.protocol}"`);
  const database = decodeURIComponent(u.pathname.replace(/^\//, ""));
  if (database === "") throw new Error("the database URL names no database (mysql://host:port/<db>)");
  return {
    host: u.hostname || "127.0.0.1",
    port: u.port === "" ? 3306 : Number(u.port),
    user: decodeURIComponent(u.username) || "root",
    password: decodeURIComponent(u.password),
    database,
    charset: "utf8mb4",
    timezone: "Z",
    // Every BIGINT we store (ms timestamps, fences, ids) fits in 2^53: plain numbers.
    supportBigNumbers: false,
    bigNumberStrings: false,
    // SUM() and friends return DECIMAL; as numbers they match what SQLite returns.
    decimalNumbers: true,
    connectTimeout: config.connectTimeoutMs ?? 5_000,
  };
}

function mysqlKnex(url: string, config: DatabaseConfig): Knex {
  const pool = config.pool ?? {};
  return knex({
    client: "mysql2",
    connection: mysqlConnection(url, config),
    acquireConnectionTimeout: pool.acquireTimeoutMs ?? 10_000,
    pool: {
      min: pool.min ?? 0,
      max: pool.max ?? 10,
      idleTimeoutMillis: pool.idleTimeoutMs ?? 30_000,
      // READ COMMITTED: claims use SKIP LOCKED and commits are conditional writes, neither
      // needs REPEATABLE READ's gap locks, which only add deadlocks under concurrent batches.
      afterCreate(conn: { query(sql: string, cb: (err: Error | null) => void): void }, done: (err: Error | null, c: unknown) => void) {
        conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", (err) => done(err, conn));
      },
    },
    ...(config.logger === undefined ? {} : { log: config.logger }),
  });
}

interface SqliteHandle {
  pragma(source: string): unknown;
}

function sqliteKnex(filename: string, config: DatabaseConfig): Knex {
  const pool = config.pool ?? {};
  return knex({
    client: "better-sqlite3",
    connection: { filename },
    useNullAsDefault: true,
    acquireConnectionTimeout: pool.acquireTimeoutMs ?? 10_000,
    pool: {
      min: pool.min ?? 1,
      max: pool.max ?? 1,
      // An in-memory database lives exactly as long as its one connection.
      idleTimeoutMillis: filename === ":memory:" ? Number.MAX_SAFE_INTEGER : pool.idleTimeoutMs ?? 30_000,
      afterCreate(conn: SqliteHandle, done: (err: Error | null, c: unknown) => void) {
        try {
          conn.pragma("journal_mode = WAL");
          conn.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
          conn.pragma("foreign_keys = ON");
          conn.pragma("synchronous = NORMAL");
          done(null, conn);
        } catch (err) {
          done(err as Error, conn);
        }
      },
    },
    ...(config.logger === undefined ? {} : { log: config.logger }),
  });
}

/** Resolves the SQLite file for a `sqlite:` URL or the default under `dataDir`. */
function sqliteFilename(config: DatabaseConfig): string {
  if (config.url !== undefined) {
    const rest = config.url.slice("sqlite:".length).replace(/^\/\//, "");
    if (rest === ":memory:") return rest;
    if (rest === "") throw new Error("the sqlite: URL names no file");
    return rest;
  }
  // Private to the owner: it holds the embedded database and, in development, the master keys.
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  return join(config.dataDir, SQLITE_FILE);
}

/**
 * Makes connection failures surface as `UnavailableError`. Every query and transaction of a
 * knex instance takes its connection through `client.acquireConnection`, so a database that
 * is down or refuses connections is reported in one place. Errors while a query runs reach
 * `toConnectError`, which classifies them with the same rules (storage/errors.ts).
 */
function reportUnavailable(instance: Knex): Knex {
  const client = instance.client as { acquireConnection(): Promise<unknown> };
  const acquire = client.acquireConnection.bind(client);
  client.acquireConnection = async () => {
    try {
      return await acquire();
    } catch (err) {
      throw toDbError(err);
    }
  };
  return instance;
}

/** Which dialect a URL selects (no URL: the embedded SQLite). */
export function dialectOfUrl(url: string | undefined): Dialect {
  if (url === undefined || url === "" || url.startsWith("sqlite:")) return "sqlite";
  if (url.startsWith("mysql:")) return "mysql";
  throw new Error(`unsupported database URL (expected mysql://… or sqlite:…)`);
}

/**
 * Opens the database described by `config`. No connection is made until the first query
 * (MySQL pools start empty); SQLite creates `dataDir` and the file.
 */
export function createDatabase(config: DatabaseConfig): Database {
  const url = config.url === "" ? undefined : config.url;
  const dialect = dialectOfUrl(url);
  const replicaUrl = config.replicaUrl === "" ? undefined : config.replicaUrl;
  if (replicaUrl !== undefined && (dialect !== "mysql" || dialectOfUrl(replicaUrl) !== "mysql")) {
    throw new Error("a read replica is only supported with a mysql:// primary and replica");
  }

  const primary = reportUnavailable(
    dialect === "mysql" ? mysqlKnex(url as string, config) : sqliteKnex(sqliteFilename(config), config),
  );
  const replica = replicaUrl === undefined ? primary : reportUnavailable(mysqlKnex(replicaUrl, config));

  let closing: Promise<void> | undefined;
  return {
    primary,
    replica,
    dialect,
    close() {
      closing ??= (async () => {
        if (replica !== primary) await replica.destroy();
        await primary.destroy();
      })();
      return closing;
    },
  };
}
