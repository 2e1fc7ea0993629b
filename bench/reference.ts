import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import type { Knex } from "knex";
import { createPool, type RowDataPacket } from "mysql2/promise";

/** The part of better-sqlite3 the SQLite loop uses (the package ships no types; knex loads it too). */
interface SqliteStatement {
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
  run(...params: unknown[]): unknown;
}
interface SqliteDatabase {
  pragma(source: string): unknown;
  prepare(sql: string): SqliteStatement;
  transaction<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void;
  close(): void;
}
const BetterSqlite = createRequire(import.meta.url)("better-sqlite3") as new (file: string) => SqliteDatabase;

/**
 * The references the mesh is measured against: the plain loops somebody would write instead of
 * the mesh, each the best plain version for its database, not a straw man. One process, no RPC,
 * no leases, no claims: take the next id range of `batchSize` records, read it with one SELECT,
 * sign every payload with Ed25519 on the main thread (one key per batch, round robin over
 * `keyCount` keys) and store the batch's signatures with one multi-row INSERT.
 */
export interface ReferenceOptions {
  batchSize: number;
  keyCount: number;
}

/** What a reference loop did: its wall time and the signatures it stored. */
export interface ReferenceResult {
  wallMs: number;
  signed: number;
}

/** Keys made before the clock starts: the mesh's keys exist before its job too. */
function referenceKeys(count: number): { id: string; key: KeyObject }[] {
  return Array.from({ length: count }, (_, i) => ({ id: `ref-${i}`, key: generateKeyPairSync("ed25519").privateKey }));
}

const SIGNATURE_COLUMNS = "(record_id, key_id, fence, batch_id, signature, signed_at)";

/**
 * MariaDB/MySQL through mysql2 with a pool of `inFlight` (default 4) connections, one batch in
 * flight on each. Both statements are prepared (`execute`: cached per connection, parameters
 * sent in the binary protocol). Measured once against `query` with one `VALUES ?` (mysql2
 * escaping a ~250 KB SQL text per insert) on 100k records, `execute` was the faster:
 * 2.9 and 3.3 s against 3.2 and 4.5 s, alternated, on the busy two-core machine. Six
 * parameters a row stay under the protocol's 65,535 up to the largest batch a job takes (10,000).
 */
export async function referenceLoop(url: string, opts: ReferenceOptions & { inFlight?: number }): Promise<ReferenceResult> {
  const inFlight = opts.inFlight ?? 4;
  const keys = referenceKeys(opts.keyCount);
  const pool = createPool({ uri: url, connectionLimit: inFlight });
  const insertSql = (rows: number) => `INSERT INTO signatures ${SIGNATURE_COLUMNS} VALUES ${Array(rows).fill("(?, ?, ?, ?, ?, ?)").join(", ")}`;
  try {
    const started = performance.now();
    const [[range]] = await pool.query<RowDataPacket[]>("SELECT MIN(id) AS lo, MAX(id) AS hi FROM records");
    const lo = Number(range?.lo ?? 1);
    const hi = Number(range?.hi ?? 0);
    let next = lo;
    let batch = 0;
    let signed = 0;
    const worker = async () => {
      while (next <= hi) {
        const from = next;
        const to = Math.min(hi, from + opts.batchSize - 1);
        next = to + 1;
        const n = batch++;
        const [rows] = await pool.execute<RowDataPacket[]>("SELECT id, payload FROM records WHERE id BETWEEN ? AND ?", [from, to]);
        if (rows.length === 0) continue;
        const { id: keyId, key } = keys[n % keys.length]!;
        const now = Date.now();
        const batchId = `ref-${n}`;
        const params: (number | string | Buffer)[] = [];
        for (const r of rows) params.push(r.id as number, keyId, 1, batchId, sign(null, r.payload as Buffer, key), now);
        await pool.execute(insertSql(rows.length), params);
        signed += rows.length;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    return { wallMs: performance.now() - started, signed };
  } finally {
    await pool.end();
  }
}

/** SQLite caps a statement's parameters at 32766; six per signature row. */
const SQLITE_MAX_ROWS_PER_INSERT = Math.floor(32766 / 6);

/**
 * SQLite through better-sqlite3 on the file the embedded mesh used, with the connection settings
 * keymesh itself uses (WAL, synchronous NORMAL, foreign keys on), so both pay for the same
 * durability and checks. SQLite has one writer, so one batch is in flight: read the range with a
 * prepared SELECT, sign, and insert the signatures with one prepared multi-row INSERT in one
 * transaction per batch. Statements are prepared once per row count and reused.
 */
export function sqliteReferenceLoop(file: string, opts: ReferenceOptions): ReferenceResult {
  const keys = referenceKeys(opts.keyCount);
  const db = new BetterSqlite(file);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma("foreign_keys = ON");
    const started = performance.now();
    const select = db.prepare("SELECT id, payload FROM records WHERE id BETWEEN ? AND ?");
    const inserts = new Map<number, SqliteStatement>();
    const insertOf = (rows: number) => {
      let stmt = inserts.get(rows);
      if (!stmt) inserts.set(rows, (stmt = db.prepare(`INSERT INTO signatures ${SIGNATURE_COLUMNS} VALUES ${Array(rows).fill("(?, ?, ?, ?, ?, ?)").join(", ")}`)));
      return stmt;
    };
    const store = db.transaction((params: unknown[], rows: number) => {
      for (let at = 0; at < rows; at += SQLITE_MAX_ROWS_PER_INSERT) {
        const n = Math.min(SQLITE_MAX_ROWS_PER_INSERT, rows - at);
        insertOf(n).run(params.slice(at * 6, (at + n) * 6));
      }
    });
    const range = db.prepare("SELECT MIN(id) AS lo, MAX(id) AS hi FROM records").get() as { lo: number | null; hi: number | null } | undefined;
    const hi = range?.hi ?? 0;
    let signed = 0;
    for (let from = range?.lo ?? 1, n = 0; from <= hi; from += opts.batchSize, n++) {
      const rows = select.all(from, Math.min(hi, from + opts.batchSize - 1)) as { id: number; payload: Buffer }[];
      if (rows.length === 0) continue;
      const { id: keyId, key } = keys[n % keys.length]!;
      const now = Date.now();
      const batchId = `ref-${n}`;
      const params: unknown[] = [];
      for (const r of rows) params.push(r.id, keyId, 1, batchId, sign(null, r.payload, key), now);
      store(params, rows.length);
      signed += rows.length;
    }
    return { wallMs: performance.now() - started, signed };
  } finally {
    db.close();
  }
}

/**
 * Puts the records back to "never signed, never claimed", on MariaDB or SQLite, so the next run
 * signs all of them: every signature and every claim goes (claims are id ranges; records carry
 * no claim state). Keys, fences and batch history stay: a fence only ever rises, and history is
 * per job.
 */
export async function resetSigningState(db: Knex): Promise<void> {
  await db.transaction(async (trx) => {
    await trx("signatures").del();
    await trx("claims").del();
  });
}
