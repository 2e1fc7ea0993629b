import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../../test/support/mysql.js";
import { createDatabase, dialectOfUrl, type Database } from "./database.js";
import { Code } from "@connectrpc/connect";
import { toConnectError, UnavailableError } from "../errors.js";
import { dbUnavailableCode, isTransientDbError } from "./errors.js";
import { toDbError } from "./database.js";

/** A TCP port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("createDatabase on sqlite", () => {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-db-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("creates <dataDir>/keymesh.sqlite with WAL, busy timeout and foreign keys on", async () => {
    const dataDir = join(dir, "nested", "data");
    const db = createDatabase({ dataDir });
    try {
      expect(db.dialect).toBe("sqlite");
      expect(db.replica).toBe(db.primary);
      const [{ journal_mode }] = await db.primary.raw("PRAGMA journal_mode");
      const [{ foreign_keys }] = await db.primary.raw("PRAGMA foreign_keys");
      const [{ timeout }] = await db.primary.raw("PRAGMA busy_timeout");
      expect({ journal_mode, foreign_keys, timeout }).toEqual({ journal_mode: "wal", foreign_keys: 1, timeout: 5000 });
      expect(existsSync(join(dataDir, "keymesh.sqlite"))).toBe(true);
    } finally {
      await db.close();
      await db.close();
    }
  });

  it("opens an in-memory database from sqlite::memory:", async () => {
    const db = createDatabase({ url: "sqlite::memory:", dataDir: dir });
    try {
      await db.primary.schema.createTable("t", (t) => t.integer("x"));
      await db.primary("t").insert({ x: 1 });
      expect(await db.primary("t").count({ n: "*" })).toEqual([{ n: 1 }]);
    } finally {
      await db.close();
    }
  });

  it("rejects a replica without a mysql primary, and unknown schemes", () => {
    expect(() => createDatabase({ dataDir: dir, replicaUrl: "mysql://h/db" })).toThrow(/replica/);
    expect(() => dialectOfUrl("postgres://h/db")).toThrow(/unsupported/);
  });
});

describe("createDatabase on mysql", () => {
  let tdb: TestDatabase;
  let db: Database;
  beforeAll(async () => {
    tdb = await createTestDatabase();
    db = createDatabase({ url: tdb.url, dataDir: "unused" });
  });
  afterAll(async () => {
    await db?.close();
    await tdb?.drop();
  });

  it("connects with utf8mb4, READ COMMITTED and numeric BIGINTs", async () => {
    expect(db.dialect).toBe("mysql");
    const [rows] = await db.primary.raw(
      "SELECT @@character_set_connection AS cs, @@tx_isolation AS iso, CAST(1700000000123 AS SIGNED) AS ms, SUM(2) AS total",
    );
    expect(rows[0]).toEqual({ cs: "utf8mb4", iso: "READ-COMMITTED", ms: 1700000000123, total: 2 });
  });

  it("uses a separate pool for a replica URL", async () => {
    const withReplica = createDatabase({ url: tdb.url, replicaUrl: tdb.url, dataDir: "unused" });
    try {
      expect(withReplica.replica).not.toBe(withReplica.primary);
      const [rows] = await withReplica.replica.raw("SELECT DATABASE() AS db");
      expect(rows[0].db).toBe(tdb.name);
    } finally {
      await withReplica.close();
    }
  });

  it("classifies a deadlock as unavailable: the caller gets Unavailable and retries", async () => {
    await db.primary.schema.createTable("dl", (t) => {
      t.integer("id").primary();
      t.integer("v");
    });
    await db.primary("dl").insert([{ id: 1, v: 0 }, { id: 2, v: 0 }]);
    const t1 = await db.primary.transaction();
    const t2 = await db.primary.transaction();
    try {
      await t1("dl").where({ id: 1 }).update({ v: 1 });
      await t2("dl").where({ id: 2 }).update({ v: 2 });
      const first = t1("dl").where({ id: 2 }).update({ v: 1 });
      await new Promise((r) => setTimeout(r, 200));
      const second = t2("dl").where({ id: 1 }).update({ v: 2 });
      const results = await Promise.allSettled([first, second]);
      const failed = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason);
      expect(failed).toHaveLength(1);
      expect(dbUnavailableCode(failed[0])).toBe("ER_LOCK_DEADLOCK");
      expect(toConnectError(failed[0]).code).toBe(Code.Unavailable);
      expect(toDbError(failed[0])).toBeInstanceOf(UnavailableError);
    } finally {
      await t1.rollback().catch(() => {});
      await t2.rollback().catch(() => {});
    }
  });
});

describe("a database that is down", () => {
  it("fails queries with UnavailableError instead of hanging", async () => {
    const port = await closedPort();
    const quiet = { warn: () => {}, error: () => {}, debug: () => {} };
    const db = createDatabase({ url: `mysql://root@127.0.0.1:${port}/nothing`, dataDir: "unused", logger: quiet });
    try {
      const started = Date.now();
      const err = await db.primary.raw("SELECT 1").then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as UnavailableError).driverCode).toBe("ECONNREFUSED");
      expect((err as UnavailableError).dependency).toBe("database");
      expect(Date.now() - started).toBeLessThan(5_000);
      const inTx = await db.primary.transaction(async () => undefined).then(() => undefined, (e: unknown) => e);
      expect(inTx).toBeInstanceOf(UnavailableError);
    } finally {
      await db.close();
    }
  });
});

describe("isTransientDbError", () => {
  it.each([
    ["ECONNREFUSED"],
    ["PROTOCOL_CONNECTION_LOST"],
    ["ER_LOCK_DEADLOCK"],
    ["ER_LOCK_WAIT_TIMEOUT"],
    ["SQLITE_BUSY"],
    ["SQLITE_BUSY_SNAPSHOT"],
  ])("recognises %s", (code) => {
    expect(isTransientDbError(Object.assign(new Error("x"), { code }))).toBe(true);
  });

  it("follows the cause chain and knex pool timeouts", () => {
    const inner = Object.assign(new Error("lost"), { code: "PROTOCOL_CONNECTION_LOST" });
    expect(isTransientDbError(new Error("wrapped", { cause: inner }))).toBe(true);
    expect(isTransientDbError(Object.assign(new Error("t"), { name: "KnexTimeoutError" }))).toBe(true);
  });

  it("leaves real errors alone", () => {
    const dup = Object.assign(new Error("dup"), { code: "ER_DUP_ENTRY", errno: 1062 });
    expect(isTransientDbError(dup)).toBe(false);
    expect(isTransientDbError(Object.assign(new Error("c"), { code: "SQLITE_CONSTRAINT_PRIMARYKEY" }))).toBe(false);
    expect(toDbError(dup)).toBe(dup);
    expect(isTransientDbError(undefined)).toBe(false);
  });
});
