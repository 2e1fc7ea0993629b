/**
 * Hot-path statements as server-side prepared statements. On MySQL/MariaDB they go through
 * mysql2's `execute`: parsed once per connection (mysql2 keeps each connection's statements by
 * text) and sent in the binary protocol, so no SQL text is built and escaped per call — for a
 * 1000-row insert that text is a quarter of a megabyte. On SQLite each statement is prepared
 * once per connection and kept (knex prepares it again on every call).
 *
 * Each statement is one span named like knex's renamed spans (`INSERT signatures`), with the
 * statement's text up to its first placeholder list, never its values.
 */
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Knex } from "knex";
import { sqlSpanOf } from "../telemetry/sql-spans.js";
import { toDbError } from "./database.js";

interface MysqlConnection {
  execute(sql: string, params: unknown[], cb: (err: Error | null, result: unknown) => void): void;
  config?: { database?: string };
}

/** Instrumentation scope of the statements' spans (knex's own are renamed in sql-spans.ts). */
export const PREPARED_SCOPE = "keymesh.sql.prepared";

const tracer = trace.getTracer(PREPARED_SCOPE);

/** What a write reports. */
export interface WriteResult {
  readonly affectedRows: number;
}

/** Text for the span: the statement up to where a long VALUES list begins. */
const shownText = (sql: string) => (sql.length > 400 ? `${sql.slice(0, 400)}…` : sql);

interface SqliteStatement {
  readonly reader: boolean;
  all(...params: unknown[]): unknown[];
  run(...params: unknown[]): { changes: number };
}

interface SqliteConnection {
  prepare(sql: string): SqliteStatement;
  readonly name?: string;
}

/** Prepared statements per SQLite connection (better-sqlite3 keeps none of its own). */
const sqliteStatements = new WeakMap<SqliteConnection, Map<string, SqliteStatement>>();
/** Statement texts kept per SQLite connection; the oldest is dropped beyond it. */
const SQLITE_STATEMENTS = 64;

function sqliteStatement(conn: SqliteConnection, sql: string): SqliteStatement {
  let cache = sqliteStatements.get(conn);
  if (!cache) sqliteStatements.set(conn, (cache = new Map()));
  let stmt = cache.get(sql);
  if (!stmt) {
    stmt = conn.prepare(sql);
    cache.set(sql, stmt);
    if (cache.size > SQLITE_STATEMENTS) cache.delete(cache.keys().next().value!);
  }
  return stmt;
}

type PooledConnection = MysqlConnection & SqliteConnection;

interface PoolClient {
  acquireConnection(): Promise<PooledConnection>;
  releaseConnection(c: unknown): Promise<unknown>;
  emit(event: "query", query: { sql: string; method: string; bindings: [] }): void;
}

/** One statement on a connection in hand, in its own span. */
async function executeOn<T>(client: PoolClient, conn: PooledConnection, dialect: "mysql" | "sqlite", sql: string, params: readonly unknown[]): Promise<T[] & WriteResult> {
  const { name, attributes } = sqlSpanOf({ "db.query.text": sql, "db.system.name": dialect, "db.namespace": dialect === "mysql" ? conn.config?.database : conn.name });
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes: { ...attributes, "db.query.text": shownText(sql) } });
  try {
    // knex's own "query" event, so whoever watches the knex instance sees every statement
    // (without its values, as in the span).
    context.with(trace.setSpan(context.active(), span), () => client.emit("query", { sql, method: "raw", bindings: [] }));
    if (dialect === "sqlite") {
      const stmt = sqliteStatement(conn, sql);
      if (stmt.reader) return Object.assign(stmt.all(...params) as T[], { affectedRows: 0 });
      return Object.assign([] as T[], { affectedRows: stmt.run(...params).changes });
    }
    const result = await new Promise<unknown>((resolve, reject) => conn.execute(sql, params as unknown[], (err, res) => (err ? reject(err) : resolve(res))));
    if (Array.isArray(result)) return Object.assign(result as T[], { affectedRows: 0 });
    return Object.assign([] as T[], { affectedRows: Number((result as { affectedRows?: number }).affectedRows ?? 0) });
  } catch (err) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    throw toDbError(err);
  } finally {
    span.end();
  }
}

/**
 * Runs `sql` with `params` on `k` (a transaction, to use its connection; or the pool). Rows for
 * a SELECT, `{ affectedRows }` for a write: on MySQL/MariaDB through mysql2's `execute`, on
 * SQLite through a better-sqlite3 statement prepared once per connection.
 */
export async function prepared<T = unknown>(k: Knex | Knex.Transaction, dialect: "mysql" | "sqlite", sql: string, params: readonly unknown[]): Promise<T[] & WriteResult> {
  const client = k.client as PoolClient;
  const conn = await client.acquireConnection();
  try {
    return await executeOn<T>(client, conn, dialect, sql, params);
  } finally {
    await client.releaseConnection(conn);
  }
}

/**
 * A MySQL/MariaDB connection held for a transaction that a stored procedure opens (its
 * START TRANSACTION is inside the CALL, so the transaction costs no BEGIN round trip) and the
 * caller ends.
 */
export interface HeldConnection {
  /** Calls a procedure (a prepared CALL, in its own span); the rows of its first result set. */
  call<T>(sql: string, params: readonly unknown[]): Promise<T[]>;
  /** `call` for a procedure that may leave a transaction open, which `end` then ends. */
  callOpening<T>(sql: string, params: readonly unknown[]): Promise<T[]>;
  /** A prepared statement in the transaction, in its own span. */
  run<T = unknown>(sql: string, params: readonly unknown[]): Promise<T[] & WriteResult>;
  /** Ends the transaction: transaction control, like knex's BEGIN and COMMIT, has no span. */
  end(outcome: "COMMIT" | "ROLLBACK"): Promise<void>;
}

/**
 * Runs `work` on one connection of `k`'s pool. A transaction left open when `work` returns or
 * throws is rolled back before the connection goes back to the pool, so no other user of the
 * pool inherits it.
 */
export async function withHeldConnection<T>(k: Knex, work: (conn: HeldConnection) => Promise<T>): Promise<T> {
  const client = k.client as PoolClient;
  const conn = (await client.acquireConnection()) as PooledConnection & {
    query(sql: string, cb: (err: Error | null, result: unknown) => void): void;
    serverStatus?: number;
  };
  let open = false;
  const control = (sql: "COMMIT" | "ROLLBACK") =>
    new Promise<void>((resolve, reject) => {
      client.emit("query", { sql, method: "raw", bindings: [] });
      conn.query(sql, (err) => (err ? reject(toDbError(err)) : resolve()));
    });
  const callOn = async <R>(sql: string, params: readonly unknown[]) => {
    const result = (await executeOn<unknown>(client, conn, "mysql", sql, params)) as unknown[];
    // A CALL answers its result sets, then a status: the first set is what the procedure selected.
    return (Array.isArray(result[0]) ? result[0] : []) as R[];
  };
  const held: HeldConnection = {
    call: <R>(sql: string, params: readonly unknown[]) => callOn<R>(sql, params),
    callOpening<R>(sql: string, params: readonly unknown[]) {
      open = true;
      return callOn<R>(sql, params);
    },
    run: <R>(sql: string, params: readonly unknown[]) => executeOn<R>(client, conn, "mysql", sql, params),
    async end(outcome) {
      open = false;
      await control(outcome);
    },
  };
  try {
    return await work(held);
  } finally {
    if (open) await control("ROLLBACK").catch(() => undefined);
    await client.releaseConnection(conn);
  }
}

/** Placeholder lists made so far, by shape: a batch's INSERT has the same one every time. */
const placeholderLists = new Map<string, string>();

/** `(?, ?, ?), (?, ?, ?)`: `rows` groups of `columns` placeholders, for a multi-row VALUES. */
export function placeholders(rows: number, columns: number): string {
  const shape = `${rows}x${columns}`;
  let list = placeholderLists.get(shape);
  if (list === undefined) {
    const one = `(${Array.from({ length: columns }, () => "?").join(", ")})`;
    list = Array.from({ length: rows }, () => one).join(", ");
    placeholderLists.set(shape, list);
    if (placeholderLists.size > 256) placeholderLists.delete(placeholderLists.keys().next().value!);
  }
  return list;
}
