import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService, JobState, type JobProgress } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { BOUNDS } from "../bounds.js";
import { EXIT, UsageError, type Command, type CommandIO } from "../command.js";
import { CLIENT_OPTIONS, CLIENT_USAGE, connectTo, meshUrl } from "../connect.js";
import { resolveToken } from "../credentials.js";
import { CliError, describeFailure } from "../failure.js";
import { integerFlag, parseFlags } from "../flags.js";
import { listenForInterrupt } from "../interrupt.js";
import { createProgressView } from "../progress.js";
import { formatSummary, signSummary, summaryFailed } from "../sign-summary.js";
import { verifyAll } from "../verify-all.js";

const DEFAULTS = { batchSize: 1000, concurrency: 8, leaseTtlMs: 10_000 } as const;
const range = (b: { min: number; max: number }) => `${b.min}-${b.max}`;

const USAGE = `Usage: keymesh sign [options]

Seeds records and keyring keys if asked, runs a signing job on ExecutorService with a progress
bar, re-verifies every signature the job stored and prints a summary. Ctrl-C stops this run
and prints the command that finishes the job.

Options:
  --records N        seed N new records with random payloads before signing (${range(BOUNDS.records)})
  --keys K           make sure the keyring has at least K keys (${range(BOUNDS.keys)})
  --batch-size B     records per batch, fixed for the job (${range(BOUNDS.batchSize)}, default ${DEFAULTS.batchSize})
  --concurrency C    batches in flight per executor (${range(BOUNDS.concurrency)}, default ${DEFAULTS.concurrency})
  --lease-ttl-ms T   key lease time-to-live (${range(BOUNDS.leaseTtlMs)}, default ${DEFAULTS.leaseTtlMs})
  --job ID           join an existing job (to finish an interrupted one) instead of starting one
  --reset            delete all records and signatures first
  --no-verify        skip the final verification pass
  --json             print the summary as JSON (no progress bar)
${CLIENT_USAGE}
  -h, --help         show this help`;

/** `keymesh sign`: seed, run a signing job with a progress bar, verify, summarise. */
export const signCommand: Command = {
  name: "sign",
  summary: "run a signing job with a progress bar and print a verified summary",
  usage: USAGE,
  run: runSign,
};

/** Where the command is, so an interruption or failure can say what is left to do. */
type Phase = "preparing" | "signing" | "finished";

async function runSign(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(argv, {
    records: { type: "string" },
    keys: { type: "string" },
    "batch-size": { type: "string" },
    concurrency: { type: "string" },
    "lease-ttl-ms": { type: "string" },
    job: { type: "string" },
    reset: { type: "boolean", default: false },
    "no-verify": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    ...CLIENT_OPTIONS,
  });
  const records = integerFlag("records", values.records, BOUNDS.records);
  const keyCount = integerFlag("keys", values.keys, BOUNDS.keys);
  const batchSize = integerFlag("batch-size", values["batch-size"], BOUNDS.batchSize) ?? DEFAULTS.batchSize;
  const concurrency = integerFlag("concurrency", values.concurrency, BOUNDS.concurrency) ?? DEFAULTS.concurrency;
  const leaseTtlMs = integerFlag("lease-ttl-ms", values["lease-ttl-ms"], BOUNDS.leaseTtlMs) ?? DEFAULTS.leaseTtlMs;
  if (values.job !== undefined && values.job.trim() === "") throw new UsageError("--job needs a job id");
  const url = meshUrl(values.url, io.env);
  const client = connectTo(url, resolveToken(values.token, io.env, url), io.env);
  const collection = client(CollectionService);
  const keys = client(KeyManagementService);
  const executor = client(ExecutorService);
  const say = (line: string) => {
    if (!values.json) io.stderr.write(`${line}\n`);
  };
  const stderr = io.stderr as NodeJS.WriteStream;
  const tty = stderr.isTTY === true && !values.json;
  const view = createProgressView(io.stderr, { tty, ...(stderr.columns ? { columns: stderr.columns } : {}) });

  /** The command that finishes the job (or, without one, starts it): the same mesh and per-run settings. */
  const resume = (jobId: string | undefined) =>
    [
      "keymesh sign",
      jobId === undefined ? (values["batch-size"] === undefined ? "" : `--batch-size ${batchSize}`) : `--job ${jobId}`,
      values.url === undefined ? "" : `--url ${values.url}`,
      values.concurrency === undefined ? "" : `--concurrency ${concurrency}`,
      values["lease-ttl-ms"] === undefined ? "" : `--lease-ttl-ms ${leaseTtlMs}`,
    ]
      .filter(Boolean)
      .join(" ");

  let phase: Phase = "preparing";
  let jobId = values.job;
  let last: JobProgress | undefined;
  const interrupt = listenForInterrupt(() => io.stderr.write(`\nkeymesh sign: stopped at once${jobId ? `; finish job ${jobId} with: ${resume(jobId)}` : ""}\n`));
  const call = { signal: interrupt.signal };
  try {
    if (values.reset) {
      const { deleted } = await collection.deleteRecords({}, call);
      say(`deleted ${deleted} records`);
    }
    if (records) {
      const seeded = await collection.seedRecords({ count: records }, call);
      say(`seeded ${seeded.inserted} records (${seeded.total} in total)`);
    }
    if (keyCount) {
      let have = 0;
      let token = "";
      do {
        const page = await keys.listKeyringKeys({ pageSize: 10_000, pageToken: token }, call);
        have += page.keys.length;
        token = page.nextPageToken;
      } while (token);
      if (have < keyCount) await keys.createKeyringKeys({ count: keyCount - have }, call);
      say(`keyring: ${Math.max(have, keyCount)} keys`);
    }

    const started = Date.now();
    phase = "signing";
    for await (const res of executor.runJob({ jobId: values.job ?? "", spec: { batchSize, concurrency, leaseTtlMs } }, call)) {
      if (!res.progress) continue;
      last = res.progress;
      jobId = last.jobId;
      if (!values.json) view.update(last);
    }
    view.end();
    const wallMs = Date.now() - started;
    if (!last) throw new CliError("the executor ended the job without reporting progress — see the server's log");
    if (last.state === JobState.RUNNING) {
      // The server ended the stream with the job unfinished: it is shutting down.
      throw new CliError(
        `the server stopped working on job ${last.jobId} (${last.signedRecords}/${last.totalRecords} records signed) — is it shutting down? Finish the job with: ${resume(last.jobId)}`,
      );
    }
    phase = "finished";

    const stats = await collection.getBatchStats({ jobId: last.jobId }, call);
    const verification = values["no-verify"]
      ? undefined
      : // The signatures this job stored, in all its runs: earlier jobs' records were verified
        // by their own commands (`keymesh verify` checks every record), and records seeded
        // after its end are not this job's to answer for. That every record was signed is the
        // job's own count (records signed, above).
        await verifyAll({ collection, keys }, (n) => tty && io.stderr.write(`\rverifying ${n} records`), interrupt.signal, last.jobId);
    if (tty && verification) io.stderr.write("\n");
    const summary = signSummary(last, stats, verification, wallMs, io.env.KEYMESH_JAEGER_UI);
    io.stdout.write(values.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary));
    return summaryFailed(summary) ? EXIT.failure : EXIT.ok;
  } catch (err) {
    view.end();
    if (err instanceof CliError) throw err;
    if (interrupt.signal.aborted) throw new CliError(interrupted(), interrupt.exitCode());
    const what = describeFailure(err, {
      command: "sign",
      url,
      ...(values.job === undefined ? {} : { notFound: "run `keymesh sign` without --job to start a new job" }),
    });
    throw new CliError(phase === "signing" && last ? `${what}; job ${last.jobId} is unfinished: finish it with \`${resume(last.jobId)}\`` : what);
  } finally {
    interrupt.dispose();
  }

  function interrupted(): string {
    if (phase === "finished" && jobId) return `interrupted after job ${jobId} finished — check every signature with \`keymesh verify\``;
    if (!jobId) return `interrupted before a signing job started — start one with: ${resume(undefined)}`;
    const done = last ? ` (${last.signedRecords}/${last.totalRecords} records signed)` : "";
    return `interrupted; job ${jobId} is unfinished${done} — finish it with: ${resume(jobId)}`;
  }
}
