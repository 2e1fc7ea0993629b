import { createHmac } from "node:crypto";
import type { Knex } from "knex";
import { UnavailableError } from "../errors.js";
import type { Database } from "../storage/database.js";
import type { AuditLog, AuditQuery, AuditRecord, StoredAuditEvent } from "./types.js";

/**
 * The audit writer. Events are grouped: every `record` call joins the batch being gathered,
 * and one multi-row INSERT writes the whole batch, so N concurrent calls cost one round trip
 * instead of N (group commit). At most `concurrency` inserts run at once; while they do, new
 * events gather for the next one. Each caller's promise settles with its batch.
 */

/** The audit trail could not be written; the call that needed it must fail (Unavailable). */
export class AuditUnavailableError extends UnavailableError {
  constructor(cause?: unknown) {
    super("audit", "the audit trail cannot be written right now, so the call was refused; try again shortly", { cause });
  }
}

/** Options for `createAuditLog`. */
export interface AuditLogOptions {
  readonly db: Database;
  /** The HMAC key for object ids (32 random bytes, shared by every process of the mesh). */
  readonly key: Buffer;
  readonly now?: () => number;
  /** Rows per INSERT (default 500). */
  readonly maxBatch?: number;
  /** INSERTs in flight at once (default 2). */
  readonly concurrency?: number;
}

interface Pending {
  readonly row: Record<string, string | number>;
  resolve(): void;
  reject(err: unknown): void;
}

const TABLE = "audit_events";

function toRow(e: AuditRecord, hmac: (id: string) => string, now: number): Record<string, string | number> {
  return {
    time_ms: e.time ?? now,
    principal: e.principal.slice(0, 160),
    peer: (e.peer ?? "").slice(0, 128),
    method: e.method.slice(0, 160),
    outcome: e.outcome,
    code: e.code ?? (e.outcome === "ok" ? "ok" : "unknown"),
    object_kind: e.object?.kind.slice(0, 32) ?? "",
    object_hmac: e.object === undefined ? "" : hmac(e.object.id),
    version: e.version ?? 0,
  };
}

function fromRow(r: Record<string, unknown>): StoredAuditEvent {
  return {
    id: String(r.id),
    timeMs: Number(r.time_ms),
    principal: String(r.principal),
    peer: String(r.peer),
    method: String(r.method),
    outcome: r.outcome as StoredAuditEvent["outcome"],
    code: String(r.code),
    objectKind: String(r.object_kind),
    objectHmac: String(r.object_hmac),
    version: Number(r.version),
  };
}

/** Creates the audit log over the `audit_events` table of `db`. */
export function createAuditLog(opts: AuditLogOptions): AuditLog {
  const { db } = opts;
  const now = opts.now ?? Date.now;
  const maxBatch = opts.maxBatch ?? 500;
  const concurrency = opts.concurrency ?? 2;
  const hmac = (id: string) => createHmac("sha256", opts.key).update(id, "utf8").digest("hex");
  let queue: Pending[] = [];
  let inFlight = 0;
  let scheduled = false;
  const idle: Array<() => void> = [];

  async function write(batch: Pending[]): Promise<void> {
    try {
      await db.primary(TABLE).insert(batch.map((p) => p.row));
      for (const p of batch) p.resolve();
    } catch (err) {
      const failure = new AuditUnavailableError(err);
      for (const p of batch) p.reject(failure);
    }
  }

  function pump(): void {
    scheduled = false;
    while (queue.length > 0 && inFlight < concurrency) {
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch);
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch);
      inFlight++;
      void write(batch).finally(() => {
        inFlight--;
        if (queue.length > 0) pump();
        else if (inFlight === 0) for (const w of idle.splice(0)) w();
      });
    }
  }

  return {
    hmac,
    record(event) {
      return new Promise<void>((resolve, reject) => {
        queue.push({ row: toRow(event, hmac, now()), resolve, reject });
        // Let the calls of this turn of the event loop join the batch before it leaves.
        if (!scheduled && inFlight < concurrency) {
          scheduled = true;
          setImmediate(pump);
        }
      });
    },

    async list(q: AuditQuery) {
      let query: Knex.QueryBuilder = db.replica(TABLE).select("*").limit(q.limit);
      if (q.sinceMs !== undefined && q.sinceMs > 0) query = query.where("time_ms", ">=", q.sinceMs);
      if (q.objectId !== undefined && q.objectId !== "") query = query.where("object_hmac", hmac(q.objectId));
      if (q.afterId !== undefined) query = query.where("id", ">", Number(q.afterId)).orderBy("id", "asc");
      else {
        if (q.beforeId !== undefined) query = query.where("id", "<", Number(q.beforeId));
        query = query.orderBy("id", "desc");
      }
      return ((await query) as Record<string, unknown>[]).map(fromRow);
    },

    async purge(beforeMs) {
      let total = 0;
      // In chunks, so a large backlog never holds long locks on the table writers append to.
      for (;;) {
        const ids = (await db.primary(TABLE).select("id").where("time_ms", "<", beforeMs).orderBy("id").limit(5000)) as { id: number }[];
        if (ids.length === 0) return total;
        total += await db.primary(TABLE).whereIn("id", ids.map((r) => r.id)).delete();
      }
    },

    flush() {
      if (queue.length === 0 && inFlight === 0) return Promise.resolve();
      return new Promise((resolve) => idle.push(resolve));
    },
  };
}
