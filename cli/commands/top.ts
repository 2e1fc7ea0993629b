import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { EXIT, UsageError, type Command, type CommandIO } from "../command.js";
import { CLIENT_OPTIONS, CLIENT_USAGE, connectTo, meshUrl } from "../connect.js";
import { resolveToken } from "../credentials.js";

const USAGE = `Usage: keymesh top [options]

A live view of a running mesh, refreshed in place: records signed, records per second, jobs
running and their progress, keys busy, server faults and refused batches. Progress comes from
CollectionService.GetProgress; jobs, keys busy and errors from the services' Prometheus
endpoints (KEYMESH_METRICS_PORT). Ctrl-C quits.

Options:
${CLIENT_USAGE}
  --metrics URLS     comma-separated /metrics URLs of the services (default
                     http://127.0.0.1:$KEYMESH_METRICS_PORT/metrics when that is set)
  --interval MS      refresh period (default 1000)
  --once             print one view (measured over one interval) and exit
`;

/** `keymesh top`: a live terminal view of a running mesh. */
export const topCommand: Command = {
  name: "top",
  summary: "live view of a running mesh: jobs, records/s, keys busy, errors",
  usage: USAGE,
  run: runTop,
};

/** One sample of a Prometheus text exposition: series name, labels, value. */
export interface Series {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses the Prometheus text format (what the services' /metrics endpoints serve). */
export function parseExposition(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Server-fault codes (the same as the tracing interceptor's): gRPC numbers and Connect names. */
const FAULT_CODES = new Set(["2", "4", "12", "13", "14", "15", "unknown", "deadline_exceeded", "unimplemented", "internal", "unavailable", "data_loss"]);

interface Sample {
  at: number;
  progress?: { total: number; signed: number; claimed: number };
  meshError?: string;
  series: Series[];
  metricsUp: number;
  metricsErrors: string[];
}

const sum = (series: Series[], name: string, where: (l: Record<string, string>) => boolean = () => true) =>
  series.filter((s) => s.name === name && where(s.labels)).reduce((n, s) => n + s.value, 0);

const isFault = (l: Record<string, string>) =>
  FAULT_CODES.has(l.rpc_grpc_status_code ?? "") || FAULT_CODES.has(l.rpc_grpc_web_status_code ?? "") || FAULT_CODES.has(l.rpc_connect_rpc_error_code ?? "");

async function runTop(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...CLIENT_OPTIONS,
      metrics: { type: "string" },
      interval: { type: "string", default: "1000" },
      once: { type: "boolean", default: false },
    },
  });
  const intervalMs = Number(values.interval);
  if (!Number.isInteger(intervalMs) || intervalMs < 100 || intervalMs > 3_600_000) throw new UsageError("--interval must be 100-3600000 milliseconds");
  const url = meshUrl(values.url, io.env);
  const metricsPort = io.env.KEYMESH_METRICS_PORT?.trim();
  const metricsUrls = (values.metrics ?? (metricsPort ? `http://127.0.0.1:${metricsPort}/metrics` : ""))
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const u of metricsUrls) if (!/^https?:\/\//.test(u)) throw new UsageError(`--metrics: not an http(s) URL: ${u}`);
  const collection = connectTo(url, resolveToken(values.token, io.env, url), io.env)(CollectionService);
  const stop = new AbortController();

  async function sample(): Promise<Sample> {
    const s: Sample = { at: Date.now(), series: [], metricsUp: 0, metricsErrors: [] };
    const progress = collection
      .getProgress({}, { timeoutMs: Math.min(5000, intervalMs * 2), signal: stop.signal })
      .then((g) => (s.progress = { total: Number(g.total), signed: Number(g.signed), claimed: Number(g.claimed) }))
      .catch((err: unknown) => (s.meshError = ConnectError.from(err).rawMessage));
    const scrapes = metricsUrls.map(async (u) => {
      try {
        const res = await fetch(u, { signal: AbortSignal.any([stop.signal, AbortSignal.timeout(Math.min(5000, intervalMs * 2))]) });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        s.series.push(...parseExposition(await res.text()));
        s.metricsUp++;
      } catch (err) {
        s.metricsErrors.push(`${u}: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`);
      }
    });
    await Promise.all([progress, ...scrapes]);
    return s;
  }

  const tty = (io.stdout as { isTTY?: boolean }).isTTY === true;
  let drawn = 0;
  const draw = (lines: string[]) => {
    // In place: back to the first line of the previous frame, clear below, write the new one.
    const prefix = tty && drawn > 0 ? `\x1b[${drawn}F\x1b[J` : "";
    io.stdout.write(`${prefix}${lines.join("\n")}\n`);
    drawn = lines.length;
  };
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  if (tty) io.stdout.write("\x1b[?25l");
  try {
    let previous = await sample();
    if (values.once) {
      await sleep(intervalMs, undefined, { signal: stop.signal }).catch(() => undefined);
      const current = await sample();
      draw(render(url, metricsUrls.length, previous, current, intervalMs));
      return current.progress === undefined && current.metricsUp === 0 ? EXIT.failure : EXIT.ok;
    }
    draw(render(url, metricsUrls.length, undefined, previous, intervalMs));
    while (!stop.signal.aborted) {
      await sleep(intervalMs, undefined, { signal: stop.signal }).catch(() => undefined);
      if (stop.signal.aborted) break;
      const current = await sample();
      if (stop.signal.aborted) break;
      draw(render(url, metricsUrls.length, previous, current, intervalMs));
      previous = current;
    }
    return EXIT.ok;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (tty) io.stdout.write("\x1b[?25h");
  }
}

/** One frame of the view; `before` is the previous sample (rates need two). */
export function render(url: string, endpoints: number, before: Sample | undefined, now: Sample, intervalMs: number): string[] {
  const rate = (f: (s: Sample) => number | undefined): string => {
    if (before === undefined) return "…";
    const a = f(before);
    const b = f(now);
    if (a === undefined || b === undefined) return "n/a";
    return Math.max(0, ((b - a) * 1000) / Math.max(1, now.at - before.at)).toFixed(0);
  };
  const metricsOn = now.metricsUp > 0;
  const signedCounter = (s: Sample) => (s.metricsUp > 0 ? sum(s.series, "keymesh_records_signed_total") : s.progress?.signed);
  const faults = (s: Sample) => (s.metricsUp > 0 ? sum(s.series, "rpc_server_duration_count", isFault) : undefined);
  const fmt = (n: number) => n.toLocaleString("en-US");
  const lines = [`keymesh top  ${url}  ${new Date(now.at).toISOString().slice(11, 19)}  every ${intervalMs} ms, Ctrl-C quits`, ""];
  if (now.progress) {
    const { total, signed, claimed } = now.progress;
    const pct = total > 0 ? ((signed / total) * 100).toFixed(1) : "0.0";
    lines.push(`records     ${fmt(signed)} / ${fmt(total)} signed (${pct}%), ${fmt(claimed)} claimed`);
  } else {
    lines.push(`records     mesh unavailable: ${now.meshError ?? "no answer"} (retrying)`);
  }
  lines.push(`rate        ${rate(signedCounter)} records/s`);
  if (metricsOn) {
    const jobs = now.series.filter((s) => s.name === "keymesh_job_progress");
    lines.push(`jobs        ${fmt(sum(now.series, "keymesh_jobs_running"))} running`);
    for (const j of jobs.slice(0, 8)) {
      const filled = Math.round(Math.min(1, j.value) * 20);
      lines.push(`  ${(j.labels.job_id ?? "?").padEnd(40)} [${"#".repeat(filled)}${".".repeat(20 - filled)}] ${(j.value * 100).toFixed(1)}%`);
    }
    lines.push(`keys busy   ${fmt(sum(now.series, "keymesh_leases_held"))}`);
    lines.push(
      `errors      ${fmt(faults(now) ?? 0)} server faults (${rate(faults)}/s), ` +
        `${fmt(sum(now.series, "keymesh_batches_refused_total"))} batches refused, ${fmt(sum(now.series, "keymesh_fence_rejections_total"))} fence rejections`,
    );
  } else {
    const why = endpoints === 0 ? "no metrics endpoint: pass --metrics or set KEYMESH_METRICS_PORT" : "metrics endpoints unavailable";
    lines.push(`jobs        n/a (${why})`, `keys busy   n/a`, `errors      n/a`);
  }
  if (endpoints > 0) lines.push(`metrics     ${now.metricsUp}/${endpoints} endpoints answering`);
  for (const e of now.metricsErrors.slice(0, 4)) lines.push(`  unavailable: ${e}`);
  return lines;
}
