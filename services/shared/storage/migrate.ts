import { setTimeout } from "node:timers/promises";
import type { Knex } from "knex";
import { toDbError, type Database } from "./database.js";
import { isTransientDbError } from "./errors.js";
import { createMigrationSource, RETIRED_MIGRATIONS, type MigrationModule } from "./migrations/index.js";

/**
 * Runs the versioned migrations, safely from many processes at once. Each service owns its
 * tables and contributes their migrations (`ServiceModule.migrations`); callers pass the
 * combined list (`collectMigrations`), and knex's `migrationSource` applies it as one history
 * in `keymesh_migrations`.
 *
 * knex's own lock (a row in `keymesh_migrations_lock`) is not enough on its own: creating
 * the lock row races (two processes can insert two rows, after which no migration can ever
 * take the lock), a second process fails instead of waiting, and on MySQL a crash in the
 * middle leaves the row locked forever (DDL commits implicitly, so nothing rolls back).
 * Around knex we therefore
 * - create the bookkeeping tables (tolerating a lost creation race) and the single lock row
 *   with an insert-or-ignore, before knex looks at them;
 * - on MySQL, hold a server-side advisory lock (GET_LOCK) for the whole run: others wait for
 *   it, it is released when its connection dies, and holding it proves no other keymesh
 *   process is migrating, so a stale knex lock left by a crash can be cleared;
 * - on SQLite, rely on the database's single writer and retry while knex reports the lock
 *   as taken (there the whole batch, lock included, is one transaction);
 * - serialise calls within one process.
 */

const TABLE = "keymesh_migrations";
const LOCK_TABLE = `${TABLE}_lock`;

/** Options for `migrate`. */
export interface MigrateOptions {
  /** How long to wait for another process's migration to finish (default 120 s). */
  readonly lockTimeoutMs?: number;
}

/** Where a database's schema stands. */
export interface MigrationStatus {
  /** Applied migrations, oldest first. */
  readonly applied: string[];
  /** Known to this code, not yet applied. */
  readonly pending: string[];
  /**
   * Applied by a newer release this code does not know (harmless during a rolling upgrade);
   * the retired shared migrations are known history and not listed.
   */
  readonly unknown: string[];
}

const inProcess = new WeakMap<Knex, Promise<unknown>>();

function migratorConfig(list: readonly MigrationModule[]): Knex.MigratorConfig {
  return {
    tableName: TABLE,
    migrationSource: createMigrationSource(list),
    // Old code must keep starting against a schema a newer release already migrated.
    disableMigrationsListValidation: true,
  };
}

/** CREATE TABLE unless it exists; losing a creation race to another process is fine. */
async function createTableOnce(knex: Knex, name: string, build: (t: Knex.CreateTableBuilder) => void): Promise<void> {
  if (await knex.schema.hasTable(name)) return;
  try {
    await knex.schema.createTable(name, build);
  } catch (err) {
    if (!(await knex.schema.hasTable(name))) throw err;
  }
}

async function ensureBookkeeping(knex: Knex): Promise<void> {
  // Same shapes as knex creates, so knex finds them and leaves them alone.
  await createTableOnce(knex, TABLE, (t) => {
    t.increments();
    t.string("name");
    t.integer("batch");
    t.timestamp("migration_time");
  });
  await createTableOnce(knex, LOCK_TABLE, (t) => {
    t.increments("index").primary();
    t.integer("is_locked");
  });
  await knex(LOCK_TABLE).insert({ index: 1, is_locked: 0 }).onConflict("index").ignore();
}

function isLockedByOther(err: unknown): boolean {
  return err instanceof Error && err.name === "MigrationLocked";
}

/** Holds a MySQL advisory lock on one pooled connection while `fn` runs. */
async function withAdvisoryLock<T>(knex: Knex, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const max = (knex.client as { pool?: { max?: number } }).pool?.max ?? 2;
  if (max < 2) throw new Error("migrate needs a MySQL pool of at least 2 connections");
  const client = knex.client as { acquireConnection(): Promise<unknown>; releaseConnection(c: unknown): Promise<void> };
  const conn = await client.acquireConnection();
  const name = "LEFT(CONCAT('keymesh.migrate.', DATABASE()), 64)";
  try {
    const [rows] = (await knex
      .raw(`SELECT GET_LOCK(${name}, ?) AS got`, [Math.max(1, Math.ceil(timeoutMs / 1000))])
      .connection(conn)) as [Array<{ got: number | null }>];
    if (rows[0]?.got !== 1) throw new Error(`timed out after ${timeoutMs} ms waiting for another process's migration`);
    try {
      return await fn();
    } finally {
      await knex.raw(`SELECT RELEASE_LOCK(${name})`).connection(conn).catch(() => undefined);
    }
  } finally {
    await client.releaseConnection(conn);
  }
}

async function runLatest(knex: Knex, list: readonly MigrationModule[]): Promise<string[]> {
  const [, log] = (await knex.migrate.latest(migratorConfig(list))) as [number, string[]];
  return log;
}

async function migrateOnce(db: Database, list: readonly MigrationModule[], opts: MigrateOptions): Promise<string[]> {
  const knex = db.primary;
  const timeoutMs = opts.lockTimeoutMs ?? 120_000;
  if (db.dialect === "mysql") {
    return withAdvisoryLock(knex, timeoutMs, async () => {
      await ensureBookkeeping(knex);
      // We hold the advisory lock, so a set knex lock is a leftover of a crashed run.
      await knex(LOCK_TABLE).update({ is_locked: 0 });
      return runLatest(knex, list);
    });
  }
  await ensureBookkeeping(knex);
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await runLatest(knex, list);
    } catch (err) {
      const retry = isLockedByOther(err) || isTransientDbError(err);
      if (!retry || Date.now() > deadline) throw err;
      await setTimeout(Math.min(1_000, 50 * attempt) + Math.floor(Math.random() * 50));
    }
  }
}

/**
 * Applies the pending ones of `migrations` (see `collectMigrations`) and returns the names this call applied
 * (empty when another process got there first). Safe to call concurrently from many
 * processes at start-up; transient failures surface as `UnavailableError`.
 */
export async function migrate(
  db: Database,
  migrations: readonly MigrationModule[],
  opts: MigrateOptions = {},
): Promise<{ applied: string[] }> {
  const previous = inProcess.get(db.primary) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(() => migrateOnce(db, migrations, opts));
  inProcess.set(db.primary, run);
  try {
    return { applied: await run };
  } catch (err) {
    throw toDbError(err);
  }
}

/** Reports applied and pending migrations without changing anything. */
export async function migrationStatus(db: Database, list: readonly MigrationModule[]): Promise<MigrationStatus> {
  try {
    const knex = db.primary;
    const applied = (await knex.schema.hasTable(TABLE))
      ? (await knex(TABLE).select("name").orderBy("id")).map((r: { name: string }) => r.name)
      : [];
    const done = new Set(applied);
    const known = new Set([...list.map((m) => m.name), ...RETIRED_MIGRATIONS]);
    return {
      applied,
      pending: list.map((m) => m.name).filter((n) => !done.has(n)),
      unknown: applied.filter((n) => !known.has(n)),
    };
  } catch (err) {
    throw toDbError(err);
  }
}
