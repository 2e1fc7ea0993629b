import type { GetBatchStatsResponse } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { JobState, type JobProgress } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import type { VerifyReport } from "./verify-all.js";

/** What `keymesh sign` reports at the end of a job (printed as text or, with --json, as JSON). */
export interface SignSummary {
  jobId: string;
  state: string;
  recordsSigned: number;
  totalRecords: number;
  signedByThisRun: number;
  duplicates: number;
  batchesCommitted: number;
  batchesRejected: number;
  batchSize: number;
  keysUsed: number;
  lruSpread: { minBatchesPerKey: number; maxBatchesPerKey: number };
  batchLatencyMs: { p50: number; p99: number };
  verification: ({ ok: boolean } & VerifyReport) | { ok: null; skipped: true };
  wallMs: number;
  recordsPerSecond: number;
  traceId: string;
  traceUrl: string | undefined;
  /** Jaeger's search for the job's batch traces (each batch is a trace of its own). */
  batchesUrl: string | undefined;
  error: string | undefined;
}

/** Assembles the summary from the last progress message, the job's batch stats and the verification. */
export function signSummary(
  last: JobProgress,
  stats: GetBatchStatsResponse,
  verification: VerifyReport | undefined,
  wallMs: number,
  jaegerUi: string | undefined,
): SignSummary {
  return {
    jobId: last.jobId,
    state: (JobState[last.state] ?? "unspecified").toLowerCase(),
    recordsSigned: Number(last.signedRecords),
    totalRecords: Number(last.totalRecords),
    signedByThisRun: Number(last.signedByThisExecutor),
    duplicates: Number(stats.duplicateSignatures),
    batchesCommitted: Number(stats.batchesCommitted),
    batchesRejected: Number(stats.batchesRejected),
    batchSize: last.batchSize,
    keysUsed: stats.keysUsed,
    lruSpread: { minBatchesPerKey: Number(stats.minBatchesPerKey), maxBatchesPerKey: Number(stats.maxBatchesPerKey) },
    batchLatencyMs: { p50: Number(stats.batchLatencyP50Ms), p99: Number(stats.batchLatencyP99Ms) },
    verification: verification
      ? { ok: verification.invalid === 0 && verification.unsigned === 0, ...verification }
      : { ok: null, skipped: true },
    wallMs,
    recordsPerSecond: Math.round((Number(last.signedByThisExecutor) * 1000) / Math.max(1, wallMs)),
    traceId: last.traceId,
    traceUrl: jaegerUi && last.traceId ? `${jaegerUi.replace(/\/$/, "")}/trace/${last.traceId}` : undefined,
    batchesUrl: jaegerUi && last.traceId ? batchSearchUrl(jaegerUi, last.jobId) : undefined,
    error: last.error || undefined,
  };
}

/** The service, operation and tag under which a job's batch traces are found. */
export const BATCH_TRACES = { service: "keymesh-executor", operation: "signing.batch", tag: "keymesh.job_id" } as const;

/**
 * Jaeger UI's search for the batches of `jobId`: service keymesh-executor, operation
 * signing.batch, tag keymesh.job_id, at the UI's largest result limit.
 */
export function batchSearchUrl(jaegerUi: string, jobId: string): string {
  const query = new URLSearchParams({
    service: BATCH_TRACES.service,
    operation: BATCH_TRACES.operation,
    tags: JSON.stringify({ [BATCH_TRACES.tag]: jobId }),
    limit: "1500",
  });
  return `${jaegerUi.replace(/\/$/, "")}/search?${query.toString()}`;
}

/** The summary as aligned text lines. */
export function formatSummary(s: SignSummary): string {
  const v = s.verification;
  const verification = v.ok === null ? "skipped" : v.ok ? `ok (${v.valid} valid)` : `FAILED (${v.invalid} invalid, ${v.unsigned} unsigned)`;
  const trace = s.traceId
    ? `${s.traceId}${s.traceUrl ? `  ${s.traceUrl}` : ""} (the job; its span links to the first 1000 batches)\n` +
      `                 each batch is a trace of its own: in Jaeger, search service ${BATCH_TRACES.service}\n` +
      `                 (or the executor's OTEL_SERVICE_NAME), operation ${BATCH_TRACES.operation},\n` +
      `                 tags ${BATCH_TRACES.tag}=${s.jobId}` +
      (s.batchesUrl ? `\n                 ${s.batchesUrl}` : "")
    : "none (tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT on the services)";
  return [
    `job ${s.jobId}: ${s.state}${s.error ? ` (${s.error})` : ""}`,
    `records signed   ${s.recordsSigned}/${s.totalRecords} (${s.signedByThisRun} by this run)`,
    `duplicates       ${s.duplicates}`,
    `batches          ${s.batchesCommitted} committed, ${s.batchesRejected} rejected, size ${s.batchSize}`,
    `keys used        ${s.keysUsed} (batches per key ${s.lruSpread.minBatchesPerKey}-${s.lruSpread.maxBatchesPerKey})`,
    `batch latency    p50 ${s.batchLatencyMs.p50} ms, p99 ${s.batchLatencyMs.p99} ms`,
    `verification     ${verification}`,
    `wall time        ${(s.wallMs / 1000).toFixed(2)} s (${s.recordsPerSecond} records/s)`,
    `trace            ${trace}`,
    "",
  ].join("\n");
}

/** A job that ends not succeeded, with duplicates or with a failed verification fails the command. */
export function summaryFailed(s: SignSummary): boolean {
  return s.state !== "succeeded" || s.duplicates > 0 || s.verification.ok === false;
}
