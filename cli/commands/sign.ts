import { parseArgs } from "node:util";

import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService, JobState, type JobProgress } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { EXIT, UsageError, type Command, type CommandIO } from "../command.js";
import { CLIENT_OPTIONS, CLIENT_USAGE, connectFromFlags } from "../connect.js";
import { verifyAll } from "../verify-all.js";

const USAGE = `Usage: keymesh sign [options]

Seeds records and keyring keys if asked, runs a signing job on ExecutorService with a progress
bar, re-verifies every stored signature and prints a summary.

Options:
  --records N        seed N new records with random payloads before signing
  --keys K           make sure the keyring has at least K keys
  --batch-size B     records per batch, fixed for the job (default 1000)
  --concurrency C    batches in flight per executor (default 8)
  --lease-ttl-ms T   key lease time-to-live (default 10000)
  --job ID           join an existing job instead of starting one
  --reset            delete all records and signatures first
  --no-verify        skip the final verification pass
  --json             print the summary as JSON (no progress bar)
${CLIENT_USAGE}
`;

function bar(p: JobProgress, width = 30): string {
  const total = Number(p.totalRecords);
  const done = Number(p.signedRecords);
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(frac * width);
  return (
    `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}% ` +
    `${done}/${total}  ${Math.round(p.recordsPerSecond)} rec/s  in flight ${p.batchesInFlight}  keys busy ${p.keysBusy}`
  );
}

/** `keymesh sign`: seed, run a signing job with a progress bar, verify, summarise. */
export const signCommand: Command = {
  name: "sign",
  summary: "run a signing job with a progress bar and print a verified summary",
  usage: USAGE,
  run: runSign,
};

async function runSign(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      records: { type: "string" },
      keys: { type: "string" },
      "batch-size": { type: "string", default: "1000" },
      concurrency: { type: "string", default: "8" },
      "lease-ttl-ms": { type: "string", default: "10000" },
      job: { type: "string" },
      reset: { type: "boolean", default: false },
      "no-verify": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      ...CLIENT_OPTIONS,
    },
  });
  const int = (name: string, raw: string | undefined, min: number): number | undefined => {
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got "${raw}"`);
    return n;
  };
  const records = int("records", values.records, 1);
  const keyCount = int("keys", values.keys, 1);
  const batchSize = int("batch-size", values["batch-size"], 1)!;
  const concurrency = int("concurrency", values.concurrency, 1)!;
  const leaseTtlMs = int("lease-ttl-ms", values["lease-ttl-ms"], 1000)!;
  const { client } = connectFromFlags(values, io.env);
  const collection = client(CollectionService);
  const keys = client(KeyManagementService);
  const executor = client(ExecutorService);
  const say = (line: string) => {
    if (!values.json) io.stderr.write(`${line}\n`);
  };

  if (values.reset) {
    const { deleted } = await collection.deleteRecords({});
    say(`deleted ${deleted} records`);
  }
  if (records) {
    const seeded = await collection.seedRecords({ count: records });
    say(`seeded ${seeded.inserted} records (${seeded.total} in total)`);
  }
  if (keyCount) {
    let have = 0;
    let token = "";
    do {
      const page = await keys.listKeyringKeys({ pageSize: 10_000, pageToken: token });
      have += page.keys.length;
      token = page.nextPageToken;
    } while (token);
    if (have < keyCount) await keys.createKeyringKeys({ count: keyCount - have });
    say(`keyring: ${Math.max(have, keyCount)} keys`);
  }

  const started = Date.now();
  let last: JobProgress | undefined;
  const tty = (io.stderr as NodeJS.WriteStream).isTTY === true && !values.json;
  let lastLine = 0;
  for await (const res of executor.runJob({ jobId: values.job ?? "", spec: { batchSize, concurrency, leaseTtlMs } })) {
    last = res.progress;
    if (!last || values.json) continue;
    if (tty) io.stderr.write(`\r${bar(last)}`);
    else if (Date.now() - lastLine > 2000) {
      lastLine = Date.now();
      io.stderr.write(`${bar(last)}\n`);
    }
  }
  if (tty) io.stderr.write("\n");
  const wallMs = Date.now() - started;
  if (!last) throw new Error("the executor ended the job without reporting progress");

  const stats = await collection.getBatchStats({ jobId: last.jobId });
  const verification = values["no-verify"]
    ? undefined
    : await verifyAll({ collection, keys }, (n) => tty && io.stderr.write(`\rverifying ${n} records`));
  if (tty && verification) io.stderr.write("\n");
  const jaeger = io.env.KEYMESH_JAEGER_UI;
  const summary = {
    jobId: last.jobId,
    state: JobState[last.state].toLowerCase(),
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
    traceUrl: jaeger && last.traceId ? `${jaeger.replace(/\/$/, "")}/trace/${last.traceId}` : undefined,
    error: last.error || undefined,
  };
  if (values.json) io.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  else {
    const v = summary.verification;
    io.stdout.write(
      [
        `job ${summary.jobId}: ${summary.state}`,
        `records signed   ${summary.recordsSigned}/${summary.totalRecords} (${summary.signedByThisRun} by this run)`,
        `duplicates       ${summary.duplicates}`,
        `batches          ${summary.batchesCommitted} committed, ${summary.batchesRejected} rejected, size ${summary.batchSize}`,
        `keys used        ${summary.keysUsed} (batches per key ${summary.lruSpread.minBatchesPerKey}-${summary.lruSpread.maxBatchesPerKey})`,
        `batch latency    p50 ${summary.batchLatencyMs.p50} ms, p99 ${summary.batchLatencyMs.p99} ms`,
        `verification     ${"skipped" in v ? "skipped" : v.ok ? `ok (${v.valid} valid)` : `FAILED (${v.invalid} invalid, ${v.unsigned} unsigned)`}`,
        `wall time        ${(wallMs / 1000).toFixed(2)} s (${summary.recordsPerSecond} records/s)`,
        `trace            ${summary.traceId ? `${summary.traceId}${summary.traceUrl ? `  ${summary.traceUrl}` : ""}` : "none (tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT on the services)"}`,
        "",
      ].join("\n"),
    );
  }
  const failed = summary.state !== "succeeded" || summary.duplicates > 0 || summary.verification.ok === false;
  return failed ? EXIT.failure : EXIT.ok;
}

