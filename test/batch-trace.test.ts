/**
 * One trace per batch, small enough to read: a real signing job on the in-process mesh, with
 * tracing installed as `keymesh serve` installs it (instrumentations, SQL span names) and
 * exported to memory. Every batch is its own trace rooted at `signing.batch`
 * and linked to the job's span; the lease, claim, sign and commit work, with its SQL and
 * Redis spans, is under that root; the job's trace holds none of it; a batch is at most
 * BATCH_SPAN_BUDGET spans (a key's first use a few more), and every SQL span stands for exactly
 * one statement that was sent.
 */
import { spanExporter, stopTracing } from "./support/tracing.js";
import { trace } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BATCH_TRACES } from "../cli/sign-summary.js";
import { JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { PREPARED_SCOPE } from "../services/shared/storage/prepared.js";
import { KNEX_SCOPE } from "../services/shared/telemetry/sql-spans.js";
import { startInProcessMesh, type Backend } from "./support/mesh.js";

/**
 * Spans of one batch, per backend: the root; the lease rotation (RotateKeyLease) with the
 * release of the previous lease, its Redlock release, the grant and the new Redlock lock; the
 * claim (`collection.claim`, a ClaimStream request) with its statements; the signing (`signing.run_batch`, which
 * the claim and the commit are under); the commit (`collection.commit`) with its
 * statements. On MariaDB the grant, the claim and the commit's writes before the signatures
 * (close the claim, raise the key's fence, the batch's history row) are one stored-procedure
 * call each, then the signatures: 12 spans. On SQLite, where a statement is a function call
 * and not a round trip, they run one by one (the grant is 3 statements, the claim 2, the
 * commit 4), and in-process leases have no Redlock spans: 17. docs/signing.md lists them.
 */
const BATCH_SPAN_BUDGET: Record<Backend, number> = { "mysql+redis": 12, "sqlite+memory": 17 };
/**
 * On SQLite, the first batch of a key in a collection process gives the key its fence row
 * there, a statement of its own (on MariaDB the commit's CALL does it). The sealed key comes
 * with the lease, so signing fetches nothing on a key's first use.
 */
const FIRST_USE_SPANS = 1;
/**
 * A claim that takes over the range of a released or expired claim (after the fresh records
 * ran out) first finds that claim and supersedes it, and reads its records.
 */
const TAKEOVER_SPANS = 3;
/** The request that leases the batch's key (on the executor's LeaseStream). */
const LEASE = /^lease\.(acquire|rotate)$/;
/** Statements that open or close a transaction: recorded on the transaction's span, not as spans. */
const TRANSACTION_CONTROL = /^\s*(BEGIN|COMMIT|ROLLBACK|SET\s+TRANSACTION|SAVEPOINT|RELEASE\s+SAVEPOINT)\b/i;
/** Names of the spans that are a batch's work, wherever they land. */
const BATCH_WORK = /KeyLease$|^collection\.(claim|commit|release)$|^signing\.run_batch$|^lease\./;

afterAll(() => stopTracing());

/** A statement sent to the database, and the span that was active when it was sent. */
interface Statement {
  readonly sql: string;
  readonly traceId?: string;
  readonly spanId?: string;
}

const parentId = (s: ReadableSpan) => s.parentSpanContext?.spanId;
/** SQL spans: knex's, and the hot path's prepared statements (services/shared/storage/prepared.ts). */
const isSql = (s: ReadableSpan) => s.instrumentationScope.name === KNEX_SCOPE || s.instrumentationScope.name === PREPARED_SCOPE;
const isRedis = (s: ReadableSpan) => s.attributes["db.system.name"] === "redis";

/** The trace as an indented tree, for the failure output. */
function describeTrace(spans: readonly ReadableSpan[]): string {
  const children = new Map<string | undefined, ReadableSpan[]>();
  const ids = new Set(spans.map((s) => s.spanContext().spanId));
  for (const s of spans) {
    const parent = parentId(s) !== undefined && ids.has(parentId(s)!) ? parentId(s) : undefined;
    children.set(parent, [...(children.get(parent) ?? []), s]);
  }
  const lines: string[] = [];
  const walk = (parent: string | undefined, depth: number) => {
    for (const s of (children.get(parent) ?? []).sort((a, b) => (a.startTime[0] - b.startTime[0]) * 1e9 + a.startTime[1] - b.startTime[1])) {
      const events = s.events.length > 0 ? `  events: ${s.events.map((e) => e.name).join(", ")}` : "";
      lines.push(`${"  ".repeat(depth)}${s.name}${parentId(s) !== undefined && depth === 0 ? " (parent not in trace)" : ""}${events}`);
      walk(s.spanContext().spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return `${spans.length} spans\n${lines.join("\n")}`;
}

/** Span names and how often each occurs in one batch trace, averaged over the batches. */
function countsPerBatch(batches: readonly ReadableSpan[][]): string {
  const counts = new Map<string, number>();
  for (const b of batches) for (const s of b) counts.set(s.name, (counts.get(s.name) ?? 0) + 1);
  return [...counts].map(([name, n]) => `${(n / batches.length).toFixed(2).padStart(6)}  ${name}`).join("\n");
}

/** A finished signing job's spans, grouped the way the assertions read them. */
interface JobTraces {
  readonly jobId: string;
  readonly jobTraceId: string;
  readonly jobSpan: ReadableSpan;
  /** The `signing.batch` roots, and each one's whole trace. */
  readonly roots: readonly ReadableSpan[];
  readonly batchTraces: readonly ReadableSpan[][];
  readonly committed: readonly ReadableSpan[];
  readonly byTrace: ReadonlyMap<string, ReadableSpan[]>;
  readonly statements: readonly Statement[];
}

/** Runs a job of 500 records in batches of 100 on `backend`, recording spans and statements. */
async function runTracedJob(backend: Backend): Promise<JobTraces> {
  const mesh = await startInProcessMesh(backend);
  try {
    const statements: Statement[] = [];
    for (const knex of new Set([mesh.db.primary, mesh.db.replica])) {
      knex.on("query", (q: { sql: string }) => {
        const active = trace.getActiveSpan()?.spanContext();
        statements.push({ sql: q.sql, traceId: active?.traceId, spanId: active?.spanId });
      });
    }
    await mesh.collection.seedRecords({ count: 500 });
    await mesh.keys.createKeyringKeys({ count: 3 });
    spanExporter.reset();

    let last;
    for await (const res of mesh.executor.runJob({ spec: { batchSize: 100, concurrency: 2 } })) last = res.progress;
    expect(last?.state).toBe(JobState.SUCCEEDED);
    const jobSpan = await vi.waitFor(() => {
      const found = spanExporter.getFinishedSpans().find((s) => s.name === "signing.job");
      if (!found) throw new Error("the job span has not ended");
      return found;
    });
    const spans = spanExporter.getFinishedSpans();
    const byTrace = new Map<string, ReadableSpan[]>();
    for (const s of spans) byTrace.set(s.spanContext().traceId, [...(byTrace.get(s.spanContext().traceId) ?? []), s]);
    const roots = spans.filter((s) => s.name === "signing.batch");
    return {
      jobId: last!.jobId,
      jobTraceId: last!.traceId,
      jobSpan,
      roots,
      batchTraces: roots.map((root) => byTrace.get(root.spanContext().traceId) ?? []),
      committed: roots.filter((r) => r.attributes["keymesh.outcome"] === "committed"),
      byTrace,
      statements,
    };
  } finally {
    await mesh.close();
  }
}

/** Runs `check`; on failure prints what the batch traces hold, then fails. */
function explained(backend: Backend, job: JobTraces, check: (show: (trace: ReadableSpan[]) => void) => void): void {
  let shown: ReadableSpan[] = job.batchTraces[0] ?? [];
  try {
    check((t) => (shown = t));
  } catch (err) {
    const committed = job.committed.map((r) => job.byTrace.get(r.spanContext().traceId) ?? []);
    console.log(`[${backend}] span names per committed batch trace (mean over ${committed.length}):\n${countsPerBatch(committed)}`);
    console.log(`[${backend}] the trace the assertion failed on:\n${describeTrace(shown)}`);
    throw err;
  }
}

describe.each<Backend>(["mysql+redis", "sqlite+memory"])("batch traces on %s", (backend) => {
  let job: JobTraces;
  beforeAll(async () => {
    job = await runTracedJob(backend);
  });

  it("links the job's span to its batches, each the root of its own trace holding its lease, claim, sign and commit work", () => {
    explained(backend, job, (show) => {
      const { jobSpan, roots, committed } = job;
      // The job: its own trace, with the batch count and a link to every batch.
      expect(jobSpan.spanContext().traceId).toBe(job.jobTraceId);
      expect(committed).toHaveLength(5);
      expect(jobSpan.attributes["keymesh.batches"]).toBe(committed.length);
      expect(jobSpan.links.map((l) => l.context.spanId).sort()).toEqual(roots.map((r) => r.spanContext().spanId).sort());
      const jobTrace = job.byTrace.get(job.jobTraceId) ?? [];
      show(jobTrace);
      expect(jobTrace.filter((s) => BATCH_WORK.test(s.name) || s.attributes["keymesh.batch_id"] !== undefined).map((s) => s.name)).toEqual([]);

      for (const [i, root] of roots.entries()) {
        const batch = job.batchTraces[i]!;
        show(batch);
        // A root of its own trace, linked to the job.
        expect(root.spanContext().traceId).not.toBe(job.jobTraceId);
        expect(parentId(root)).toBeUndefined();
        // Where `keymesh sign` tells the user to look for it in Jaeger.
        expect([root.resource.attributes["service.name"], root.name, root.attributes[BATCH_TRACES.tag]]).toEqual([BATCH_TRACES.service, BATCH_TRACES.operation, job.jobId]);
        expect(root.links.map((l) => l.context.spanId)).toEqual([jobSpan.spanContext().spanId]);
        // Everything else hangs under the root.
        const byId = new Map(batch.map((s) => [s.spanContext().spanId, s]));
        expect(batch.filter((s) => s !== root && !ancestors(s, byId).includes(root)).map((s) => s.name)).toEqual([]);

        // One SQL span per statement sent: no driver span under a knex span, no span for a
        // statement that never went out, no statement (bar transaction control) without one.
        const sent = job.statements.filter((st) => st.traceId === root.spanContext().traceId);
        for (const sql of batch.filter(isSql)) {
          expect(batch.filter((s) => parentId(s) === sql.spanContext().spanId).map((s) => s.name), sql.name).toEqual([]);
          expect(sent.filter((st) => st.spanId === sql.spanContext().spanId).map((st) => st.sql), sql.name).toHaveLength(1);
        }
        const sqlIds = new Set(batch.filter(isSql).map((s) => s.spanContext().spanId));
        expect(sent.filter((st) => !sqlIds.has(st.spanId ?? "") && !TRANSACTION_CONTROL.test(st.sql)).map((st) => st.sql)).toEqual([]);
        expect(batch.filter((s) => s.attributes["db.system"] !== undefined && !isSql(s) && !isRedis(s)).map((s) => s.name)).toEqual([]);

        if (!committed.includes(root)) continue;
        // The batch's work is in its trace: lease, claim, sign, commit, with their SQL (and Redis).
        const named = (re: RegExp) => (s: ReadableSpan) => re.test(s.name);
        const under = (pred: (s: ReadableSpan) => boolean, what: (s: ReadableSpan) => boolean) =>
          batch.some((s) => what(s) && ancestors(s, byId).some(pred));
        for (const work of [LEASE, /^collection\.claim$/, /^signing\.run_batch$/, /^collection\.commit$/]) {
          expect(batch.some(named(work)), String(work)).toBe(true);
        }
        expect(under(named(/^collection\.claim$/), isSql), "SQL under the claim").toBe(true);
        expect(under(named(/^collection\.commit$/), isSql), "SQL under the commit").toBe(true);
        expect(under(named(LEASE), isSql), "SQL under the lease").toBe(true);
        if (backend === "mysql+redis") expect(under(named(LEASE), isRedis), "Redis under the lease").toBe(true);
      }
    });
  });

  it(`keeps every batch trace within ${BATCH_SPAN_BUDGET[backend]} spans (a few more on a key's first use or a range taken over)`, () => {
    explained(backend, job, (show) => {
      let steady = 0;
      for (const batch of job.batchTraces) {
        show(batch);
        const firstUse = batch.some((s) => s.name === "INSERT collection_key_fences");
        // The executor passes the lease's sealed key on: signing never has to fetch it.
        expect(batch.filter((s) => s.name.endsWith("/GetWrappedSigningKey")).map((s) => s.name)).toEqual([]);
        const takeover = batch.some((s) => s.name === "SELECT claims");
        if (!firstUse && !takeover) steady++;
        expect(batch.length).toBeLessThanOrEqual(BATCH_SPAN_BUDGET[backend] + (firstUse ? FIRST_USE_SPANS : 0) + (takeover ? TAKEOVER_SPANS : 0));
      }
      // The allowances are the exception: most batches are the plain case.
      expect(steady).toBeGreaterThan(0);
    });
  });
});

function ancestors(span: ReadableSpan, byId: ReadonlyMap<string, ReadableSpan>): ReadableSpan[] {
  const found: ReadableSpan[] = [];
  for (let p = byId.get(parentId(span) ?? ""); p; p = byId.get(parentId(p) ?? "")) found.push(p);
  return found;
}
