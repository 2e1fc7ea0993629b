import type { Knex } from "knex";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../../test/support/mysql.js";
import { createDatabase, type Database } from "./database.js";
import { migrate, migrationStatus } from "./migrate.js";
import { registeredMigrations } from "../../migrations.js";
import { collectMigrations, createMigrationSource, type MigrationModule } from "./migrations/index.js";

const TABLES = ["records", "signatures", "batches", "collection_key_fences", "keyring_keys", "key_leases", "jobs"];
const migrations = await registeredMigrations();
const ALL = migrations.map((m) => m.name);
const execFileAsync = promisify(execFile);

interface Backend {
  open(): Database;
  cleanup(): Promise<void>;
}

async function sqliteBackend(): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-migrate-"));
  return {
    open: () => createDatabase({ dataDir: dir }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

async function mysqlBackend(): Promise<Backend> {
  const tdb: TestDatabase = await createTestDatabase();
  return { open: () => createDatabase({ url: tdb.url, dataDir: "unused" }), cleanup: () => tdb.drop() };
}

const backends: Array<[string, () => Promise<Backend>]> = [
  ["sqlite", sqliteBackend],
  ["mysql", mysqlBackend],
];

describe.each(backends)("migrations on %s", (_name, makeBackend) => {
  let backend: Backend;
  let db: Database;

  beforeAll(async () => {
    backend = await makeBackend();
    db = backend.open();
  });
  afterAll(async () => {
    await db?.close();
    await backend?.cleanup();
  });

  it("applies every migration once and reports status", async () => {
    expect(ALL).toEqual(expect.arrayContaining(["keys/0001_keyring", "collection/0001_records", "executor/0001_jobs"]));
    expect(await migrationStatus(db, migrations)).toEqual({ applied: [], pending: ALL, unknown: [] });
    expect(await migrate(db, migrations)).toEqual({ applied: ALL });
    expect(await migrate(db, migrations)).toEqual({ applied: [] });
    expect(await migrationStatus(db, migrations)).toEqual({ applied: ALL, pending: [], unknown: [] });
    for (const table of TABLES) expect(await db.primary.schema.hasTable(table)).toBe(true);
    expect(await db.primary.schema.hasTable("master_keys")).toBe(false);
  });

  it("makes a second signature for a record impossible", async () => {
    const k = db.primary;
    const [id] = await k("records").insert({ payload: Buffer.from("hello"), created_at: Date.now() });
    const row = { record_id: Number(id), key_id: "k1", fence: 1, batch_id: "b1", signature: Buffer.alloc(64, 1), signed_at: 1 };
    await k("signatures").insert(row);
    await expect(k("signatures").insert({ ...row, key_id: "k2", batch_id: "b2" })).rejects.toThrow();
    const stored = await k("signatures").where({ record_id: Number(id) });
    expect(stored).toHaveLength(1);
    expect(Buffer.isBuffer(stored[0].signature)).toBe(true);
    expect(stored[0].key_id).toBe("k1");
  });

  it("refuses a signature for a record that does not exist", async () => {
    const row = { record_id: 999_999, key_id: "k1", fence: 1, batch_id: "b1", signature: Buffer.alloc(64), signed_at: 1 };
    await expect(db.primary("signatures").insert(row)).rejects.toThrow();
  });

  it("keeps one history row per batch id, several batches under one lease each their own", async () => {
    const batch = { job_id: "j", key_id: "k1", fence: 7, size: 10, executor: "e", start_at: 1 };
    await db.primary("batches").insert({ ...batch, id: "b-1" });
    // A second batch under the same lease is recorded (and refused by the commit), not hidden.
    await db.primary("batches").insert({ ...batch, id: "b-2" });
    await expect(db.primary("batches").insert({ ...batch, id: "b-1" })).rejects.toThrow();
    const rows = await db.primary("batches").where({ key_id: "k1", fence: 7 }).orderBy("id");
    expect(rows.map((r) => r.id)).toEqual(["b-1", "b-2"]);
    expect(rows[0].outcome).toBe("open");
    expect(rows[0].committed_at).toBeNull();
  });

  it("stores keys with defaults for fence, LRU and lease columns, ids case-sensitive", async () => {
    const key = {
      public_key: Buffer.alloc(32, 2),
      private_key_ciphertext: Buffer.alloc(81, 3),
      master_key_version: 1,
      created_at: Date.now(),
    };
    await db.primary("keyring_keys").insert([{ ...key, id: "Key1" }, { ...key, id: "key1" }]);
    const rows = await db.primary("keyring_keys").orderBy("id");
    expect(rows.map((r) => r.id)).toEqual(["Key1", "key1"]);
    expect(rows[0]).toMatchObject({ algorithm: "ed25519", fence: 0, last_used_at: 0, leased_until: 0, holder: null });
  });

  it("returns BIGINT millisecond timestamps as numbers", async () => {
    const now = Date.now();
    await db.primary("jobs").insert({ id: "j1", batch_size: 1000, concurrency: 4, state: "pending", created_at: now });
    const [job] = await db.primary("jobs").where({ id: "j1" });
    expect(job.created_at).toBe(now);
    expect(job.total_records).toBe(0);
  });

  it("finds unsigned records after a given id in id order", async () => {
    const k = db.primary;
    const [before] = await k("records").max({ id: "id" });
    const after = Number((before as { id: number | null }).id ?? 0);
    await k("records").insert(Array.from({ length: 5 }, (_, i) => ({ payload: Buffer.from([i]), created_at: 1 })));
    const lo = after + 1;
    await k("signatures").insert({ record_id: lo + 1, key_id: "k", fence: 1, batch_id: "b", signature: Buffer.alloc(64), signed_at: 1 });
    const rows = await k("records as r")
      .select("r.id")
      .where("r.id", ">", after)
      .whereNotExists(k("signatures as s").select(k.raw("1")).whereRaw("s.record_id = r.id"))
      .orderBy("r.id")
      .limit(3);
    expect(rows.map((r) => Number(r.id))).toEqual([lo, lo + 2, lo + 3]);
  });
});

describe("migrations on mysql: concurrency and plans", () => {
  let tdb: TestDatabase;
  const open: Database[] = [];
  const connect = () => {
    const db = createDatabase({ url: tdb.url, dataDir: "unused" });
    open.push(db);
    return db;
  };

  beforeAll(async () => {
    tdb = await createTestDatabase();
  });
  afterAll(async () => {
    await Promise.all(open.map((db) => db.close()));
    await tdb?.drop();
  });

  it("lets several processes migrate at once: one applies, the others wait and find nothing to do", async () => {
    const dbs = [connect(), connect(), connect()];
    const results = await Promise.all(dbs.map((db) => migrate(db, migrations)));
    const applied = results.flatMap((r) => r.applied);
    expect(applied).toEqual(ALL);
    const rows = await dbs[0]!.primary("keymesh_migrations").select("name").orderBy("id");
    expect(rows.map((r) => r.name)).toEqual(ALL);
    const locks = await dbs[0]!.primary("keymesh_migrations_lock").select("*");
    expect(locks).toEqual([{ index: 1, is_locked: 0 }]);
  });

  it("recovers from a knex lock left behind by a crashed migration", async () => {
    const db = connect();
    await db.primary("keymesh_migrations_lock").update({ is_locked: 1 });
    const extra: MigrationModule = {
      name: "9999_test_extra",
      up: async (k) => k.schema.createTable("t_extra", (t) => t.integer("x")),
      down: async (k) => k.schema.dropTable("t_extra"),
    };
    const result = await migrate(db, [...migrations, extra]);
    expect(result.applied).toEqual(["9999_test_extra"]);
    // Code that does not know the extra migration still starts (rolling upgrade) and sees it as unknown.
    expect(await migrate(db, migrations)).toEqual({ applied: [] });
    expect((await migrationStatus(db, migrations)).unknown).toEqual(["9999_test_extra"]);
  });

  it("claims with index range scans, no filesort", async () => {
    const db = connect();
    const explain = async (sql: string, params: Knex.RawBinding[]) =>
      ((await db.primary.raw(`EXPLAIN ${sql}`, params)) as [Array<{ table: string; key: string | null; Extra: string | null }>])[0];
    // Stale claims, oldest expiry first, through the (state, expires_at) index.
    const [stale] = await explain("SELECT id, first_id, last_id FROM claims WHERE state = 'open' AND expires_at < ? ORDER BY expires_at LIMIT 16 FOR UPDATE SKIP LOCKED", [Date.now()]);
    expect(stale?.key).toBe("claims_state_expiry_idx");
    expect(stale?.Extra ?? "").not.toMatch(/filesort/i);
    // A fresh range: the end of the claimed ids from an index, then the records' primary key
    // from there on, each probed in signatures.
    const fresh = await explain(
      "SELECT r.id, r.payload FROM records r WHERE r.id > (SELECT COALESCE(MAX(last_id), 0) FROM claims) AND NOT EXISTS (SELECT 1 FROM signatures s WHERE s.record_id = r.id) ORDER BY r.id LIMIT 1000",
      [],
    );
    expect(fresh.find((p) => p.table === "r")?.key).toBe("PRIMARY");
    expect(fresh.map((p) => p.Extra ?? "").join(" ")).not.toMatch(/filesort/i);
  });
});

describe("migration source", () => {
  it("serves each service's migrations in order, qualified by the service, and rejects a misordered list", async () => {
    const source = createMigrationSource(migrations);
    const list = await source.getMigrations([]);
    expect(list.map((m) => source.getMigrationName(m))).toEqual(ALL);
    const noop = async () => {};
    const m = (name: string): MigrationModule => ({ name, up: noop, down: noop });
    expect(collectMigrations([{ name: "a", migrations: [m("0001_x"), m("0002_y")] }, { name: "b", migrations: [m("0001_x")] }]).map((x) => x.name))
      .toEqual(["a/0001_x", "a/0002_y", "b/0001_x"]);
    expect(() => collectMigrations([{ name: "a", migrations: [m("0002_y"), m("0001_x")] }])).toThrow(/out of order/);
    expect(() => createMigrationSource([m("a/0001_x"), m("a/0001_x")])).toThrow(/duplicate/);
  });

  it("lets several processes migrate one sqlite file at once", async () => {
    // Real processes: better-sqlite3 waits for a busy database synchronously, so connections
    // contending inside one process would stall each other's event loop.
    const dir = mkdtempSync(join(tmpdir(), "keymesh-concurrent-"));
    const script = join(dir, "run-migrate.mts");
    const migrateUrl = new URL("./migrate.ts", import.meta.url).href;
    const registeredUrl = new URL("../../migrations.ts", import.meta.url).href;
    const databaseUrl = new URL("./database.ts", import.meta.url).href;
    writeFileSync(
      script,
      [
        `import { createDatabase } from ${JSON.stringify(databaseUrl)};`,
        `import { migrate } from ${JSON.stringify(migrateUrl)};`,
        `import { registeredMigrations } from ${JSON.stringify(registeredUrl)};`,
        `const db = createDatabase({ dataDir: ${JSON.stringify(dir)}, logger: { warn() {} } });`,
        `const result = await migrate(db, await registeredMigrations());`,
        `await db.close();`,
        `console.log(JSON.stringify(result));`,
      ].join("\n"),
    );
    try {
      const outputs = await Promise.all(
        [0, 1, 2].map(() =>
          execFileAsync(process.execPath, ["--import", "tsx", script], { cwd: process.cwd(), timeout: 60_000 }),
        ),
      );
      const applied = outputs.flatMap((o) => (JSON.parse(o.stdout.trim()) as { applied: string[] }).applied);
      expect(applied).toEqual(ALL);
      const db = createDatabase({ dataDir: dir });
      try {
        expect(await db.primary("keymesh_migrations_lock").select("*")).toEqual([{ index: 1, is_locked: 0 }]);
        expect((await migrationStatus(db, migrations)).applied).toEqual(ALL);
      } finally {
        await db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rolls every migration back cleanly on sqlite", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keymesh-rollback-"));
    const db = createDatabase({ dataDir: dir });
    try {
      await migrate(db, migrations);
      await db.primary.migrate.rollback({ tableName: "keymesh_migrations", migrationSource: createMigrationSource(migrations) }, true);
      for (const table of TABLES) expect(await db.primary.schema.hasTable(table)).toBe(false);
      expect((await migrationStatus(db, migrations)).pending).toEqual(ALL);
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
