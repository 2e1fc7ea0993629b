import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Knex } from "knex";
import { afterEach, describe, expect, it } from "vitest";
import { leasesMigration } from "../../../test/fixtures/legacy-migrations/0002_leases.js";
import { signingMigration } from "../../../test/fixtures/legacy-migrations/0001_signing.js";
import { createTestDatabase, type TestDatabase } from "../../../test/support/mysql.js";
import { registeredMigrations } from "../../migrations.js";
import { createCollectionStore } from "../../collection/store.js";
import { createDatabase, type Database } from "./database.js";
import { migrate, migrationStatus } from "./migrate.js";

/**
 * Databases made before each service owned its tables were built by the shared migrations
 * 0001_signing and 0002_leases (frozen copies in test/fixtures/legacy-migrations). The
 * services' migrations must adopt them in place: every row and every column and index kept,
 * the schema afterwards the same as a fresh database's.
 */

const KEPT = ["jobs", "keyring_keys", "key_leases", "batches", "records", "signatures"];
const migrations = await registeredMigrations();
/**
 * The migrations that adopted the legacy tables as they were; the later ones change them on
 * purpose (lease hashes, lapsed leases, job heartbeats, claims, batch history per batch id,
 * claims by id range)
 * and are checked against a fresh database below.
 */
const LATER = new Set(["keys/0003_lease_hashes", "keys/0007_free_keys_index", "collection/0003_claims", "collection/0004_batch_history", "collection/0005_range_claims", "executor/0002_job_heartbeat"]);
const adoption = migrations.filter((m) => !LATER.has(m.name));

interface Backend {
  readonly db: Database;
  fresh(): Promise<Database>;
  cleanup(): Promise<void>;
}

async function sqlite(): Promise<Backend> {
  const dirs = [mkdtempSync(join(tmpdir(), "keymesh-upgrade-"))];
  const dbs = [createDatabase({ dataDir: dirs[0]! })];
  return {
    db: dbs[0]!,
    async fresh() {
      dirs.push(mkdtempSync(join(tmpdir(), "keymesh-upgrade-fresh-")));
      dbs.push(createDatabase({ dataDir: dirs.at(-1)! }));
      return dbs.at(-1)!;
    },
    async cleanup() {
      for (const db of dbs) await db.close();
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function mysql(): Promise<Backend> {
  const tdbs: TestDatabase[] = [await createTestDatabase()];
  const dbs = [createDatabase({ url: tdbs[0]!.url, dataDir: "unused" })];
  return {
    db: dbs[0]!,
    async fresh() {
      tdbs.push(await createTestDatabase());
      dbs.push(createDatabase({ url: tdbs.at(-1)!.url, dataDir: "unused" }));
      return dbs.at(-1)!;
    },
    async cleanup() {
      for (const db of dbs) await db.close();
      for (const t of tdbs) await t.drop();
    },
  };
}

/** Columns (name, type, nullability, default) and index names of a table. */
async function shape(db: Database, table: string): Promise<{ columns: unknown; indexes: string[] }> {
  const k = db.primary;
  const columns = await k(table).columnInfo();
  let indexes: string[];
  if (db.dialect === "mysql") {
    const [rows] = (await k.raw(
      "SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
      [table],
    )) as [{ name: string }[]];
    indexes = rows.map((r) => r.name);
  } else {
    const rows = (await k.raw(`PRAGMA index_list(${table})`)) as { name: string }[];
    indexes = rows.map((r) => r.name);
  }
  return { columns, indexes: indexes.sort() };
}

async function shapes(db: Database, tables: readonly string[]) {
  return Object.fromEntries(await Promise.all(tables.map(async (t) => [t, await shape(db, t)] as const)));
}

/** Rows the way today's code writes them: two keys, lease history, a job, records, a committed batch. */
async function seedLegacy(k: Knex): Promise<void> {
  const key = (id: string, fence: number) => ({
    id,
    public_key: Buffer.alloc(32, id.length),
    private_key_ciphertext: Buffer.alloc(81, 7),
    master_key_version: 1,
    fence,
    last_used_at: 1_000 + fence,
    leased_until: 0,
    created_at: 500,
  });
  await k("keyring_keys").insert([key("k-a", 3), key("k-bb", 1)]);
  await k("key_leases").insert([
    { key_id: "k-a", fence: 3, holder: "exec-1", acquired_at: 1_003, previous_last_used_at: 900, expires_at: 3_003, released_at: 1_500 },
    { key_id: "k-bb", fence: 1, holder: "exec-1", acquired_at: 1_001, previous_last_used_at: 0, expires_at: 3_001, released_at: null },
  ]);
  await k("jobs").insert({ id: "job-1", batch_size: 2, concurrency: 1, state: "running", created_at: 10, lease_ttl_ms: 2_000, trace_id: "ab" });
  await k("records").insert([1, 2, 3].map((i) => ({ payload: Buffer.from([i]), created_at: 20 })));
  await k("records").whereIn("id", [1, 2]).update({ signed: 1, claim_id: "c-1", claimed_by: "exec-1", claim_expires_at: 9_999, job_id: "job-1" });
  await k("signatures").insert(
    [1, 2].map((id) => ({ record_id: id, key_id: "k-a", fence: 3, batch_id: "b-1", signature: Buffer.alloc(64, id), signed_at: 1_200 })),
  );
  await k("batches").insert([
    { id: "b-1", job_id: "job-1", key_id: "k-a", fence: 3, size: 2, claimed: 2, stored: 2, rejected: 0, outcome: "committed", executor: "exec-1", start_at: 1_003, committed_at: 1_200, ended_at: 1_200 },
    { id: "b-0", job_id: "job-1", key_id: "k-bb", fence: 1, size: 2, claimed: 2, stored: 0, rejected: 2, outcome: "rejected", executor: "exec-1", start_at: 1_001, committed_at: 1_100, ended_at: 1_100 },
  ]);
}

const ORDER: Record<string, string> = { signatures: "record_id" };

async function dump(k: Knex, tables: readonly string[]) {
  return Object.fromEntries(await Promise.all(tables.map(async (t) => [t, await k(t).select("*").orderBy(ORDER[t] ?? "id")] as const)));
}

const backends: [string, () => Promise<Backend>][] = [
  ["sqlite", sqlite],
  ["mysql", mysql],
];

describe.each(backends)("upgrading a database made before services owned their tables, on %s", (_name, open) => {
  let backend: Backend | undefined;
  afterEach(async () => {
    await backend?.cleanup();
    backend = undefined;
  });

  it("adopts every table in place: rows, columns and indexes survive, the schema matches a fresh one", async () => {
    backend = await open();
    const { db } = backend;
    expect(await migrate(db, [signingMigration, leasesMigration])).toEqual({ applied: ["0001_signing", "0002_leases"] });
    await seedLegacy(db.primary);
    const rowsBefore = await dump(db.primary, KEPT);
    const shapesBefore = await shapes(db, KEPT);
    expect(await db.primary.schema.hasTable("master_keys")).toBe(true);

    const { applied } = await migrate(db, adoption);
    expect(applied).toEqual(adoption.map((m) => m.name));
    expect(await migrate(db, adoption)).toEqual({ applied: [] });

    expect(await dump(db.primary, KEPT)).toEqual(rowsBefore);
    expect(await shapes(db, KEPT)).toEqual(shapesBefore);
    // The later migrations keep every row, adding their columns with their defaults.
    expect((await migrate(db, migrations)).applied.sort()).toEqual([...LATER].sort());
    const after = await dump(db.primary, KEPT);
    expect(after.batches).toEqual(rowsBefore.batches);
    expect(after.signatures).toEqual(rowsBefore.signatures);
    // Claims are id ranges now: records keep their id, payload and creation time only.
    expect(after.records).toEqual(rowsBefore.records.map((r: Record<string, unknown>) => ({ id: r.id, payload: r.payload, created_at: r.created_at })));
    // The records already stored are claimed again only where unsigned, after any new ones.
    await db.primary("records").insert({ payload: Buffer.from([4]), created_at: 30 });
    const store = createCollectionStore(db);
    const claim = async (n: number) => (await store.claim({ claimId: `c-up-${n}`, claimant: "e", jobId: "j", size: 2, now: 50_000, expiresAt: 60_000 })).map((r) => r.id);
    expect(await claim(1)).toEqual([4]);
    expect(await claim(2)).toEqual([3]);
    expect(await claim(3)).toEqual([]);
    await db.primary("claims").where("id", "like", "c-up-%").del();
    expect(after.jobs).toEqual(rowsBefore.jobs.map((r: object) => ({ ...r, heartbeat_at: 0 })));
    expect(after.key_leases).toEqual(rowsBefore.key_leases.map((r: object) => ({ ...r, lease_hash: null, lapsed_at: null })));
    expect(after.keyring_keys).toEqual(rowsBefore.keyring_keys.map((r: object) => ({ ...r, lease_hash: null })));
    expect(await db.primary.schema.hasTable("master_keys")).toBe(false);
    // Collection's own record of accepted fences starts from the committed batches.
    const fences = await db.primary("collection_key_fences").select("key_id", "fence");
    expect(fences).toEqual([{ key_id: "k-a", fence: 3 }]);
    // The retired names are known history, not a newer release's unknown migrations.
    expect(await migrationStatus(db, migrations)).toEqual({
      applied: ["0001_signing", "0002_leases", ...adoption.map((m) => m.name), ...migrations.filter((m) => LATER.has(m.name)).map((m) => m.name)],
      pending: [],
      unknown: [],
    });

    const fresh = await backend.fresh();
    await migrate(fresh, migrations);
    const tables = [...KEPT, "collection_key_fences"];
    expect(await shapes(db, tables)).toEqual(await shapes(fresh, tables));
  });

  it("completes a database that only had the first shared migration", async () => {
    backend = await open();
    const { db } = backend;
    await migrate(db, [signingMigration]);
    await db.primary("jobs").insert({ id: "job-old", batch_size: 5, concurrency: 2, state: "succeeded", created_at: 1 });
    await migrate(db, migrations);
    const [job] = await db.primary("jobs").where({ id: "job-old" });
    expect(job).toMatchObject({ id: "job-old", batch_size: 5, state: "succeeded", lease_ttl_ms: 10_000 });
    for (const t of ["key_leases", "collection_key_fences"]) expect(await db.primary.schema.hasTable(t)).toBe(true);
    const fresh = await backend.fresh();
    await migrate(fresh, migrations);
    expect(await shapes(db, ["jobs", "key_leases"])).toEqual(await shapes(fresh, ["jobs", "key_leases"]));
  });
});
