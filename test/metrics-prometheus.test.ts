/**
 * Metrics end to end: Debian's real Prometheus scrapes a live mesh of keymesh processes
 * (keys+collection, signing, executor, each with KEYMESH_METRICS_PORT) every second during a
 * signing job. Through Prometheus's HTTP query API: the signing rate and the batch latency
 * quantiles are non-zero and agree with the job's own summary (its progress and
 * GetBatchStats, what `keymesh sign` prints); every PromQL expression of the Grafana dashboard
 * returns data; and every metric the dashboard names is one the code declares and the mesh
 * exports. Real processes on MariaDB and a dedicated Redis.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { declaredMetrics } from "../services/shared/telemetry/metrics.js";
import "../services/shared/telemetry/metrics-signing.js";
import { RPC_METRIC_NAMES } from "../services/shared/telemetry/metrics-interceptor.js";
import { runJob, startSigningMesh, until, withDiagnostics, within, type SigningMesh } from "./support/processes.js";
import { freePort, startRedisNode, type RedisNode } from "./support/redis-nodes.js";

const PROMETHEUS = "/usr/bin/prometheus";
const RECORDS = 30_000;
const KEYS = 20;
const SPEC = { batchSize: 300, concurrency: 4, leaseTtlMs: 10_000 };
/** The window of the signing rate's query (three scrape intervals). */
const RATE_WINDOW_S = 3;
const DASHBOARD = fileURLToPath(new URL("../deploy/grafana/keymesh.json", import.meta.url));

interface Sample {
  metric: Record<string, string>;
  value?: [number, string];
  values?: [number, string][];
}

describe("metrics scraped by Prometheus during a signing job", () => {
  let redis: RedisNode | undefined;
  let mesh: SigningMesh | undefined;
  let prometheus: ChildProcess | undefined;
  let promLog = "";
  let dir = "";
  let promUrl = "";
  const metricsPorts: Record<string, number> = {};
  let job: { id: string; signed: number; elapsedMs: number; startedAt: number; endedAt: number; batchesCommitted: number; p50: number; p99: number };

  async function query(expr: string, time?: number): Promise<Sample[]> {
    const params = new URLSearchParams({ query: expr, ...(time === undefined ? {} : { time: String(time) }) });
    const res = await fetch(`${promUrl}/api/v1/query?${params}`);
    const body = (await res.json()) as { status: string; error?: string; data: { result: Sample[] } };
    if (body.status !== "success") throw new Error(`PromQL failed: ${expr}: ${body.error}`);
    return body.data.result;
  }
  const scalar = async (expr: string, time?: number) => Number((await query(expr, time))[0]?.value?.[1] ?? NaN);

  beforeAll(async () => {
    if (!existsSync(PROMETHEUS)) {
      throw new Error(`${PROMETHEUS} is missing: install Debian's prometheus package (apt-get install -y prometheus); the metrics test needs the real server`);
    }
    redis = await startRedisNode();
    for (const name of ["keys+collection", "signing", "executor-1"]) metricsPorts[name] = await freePort();
    mesh = await startSigningMesh({
      redisUrls: [redis.url],
      executors: 1,
      envFor: (name): Record<string, string> => (metricsPorts[name] === undefined ? {} : { KEYMESH_METRICS_PORT: String(metricsPorts[name]) }),
    });

    dir = mkdtempSync(join(tmpdir(), "keymesh-prometheus-"));
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const targets = Object.entries(metricsPorts).map(([name, p]) => `      - targets: ["127.0.0.1:${p}"]\n        labels: { process: "${name}" }`);
    writeFileSync(
      join(dir, "prometheus.yml"),
      `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: keymesh\n    static_configs:\n${targets.join("\n")}\n`,
    );
    prometheus = spawn(
      PROMETHEUS,
      [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--storage.tsdb.retention.time=1h"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    prometheus.stdout?.on("data", (d: Buffer) => (promLog = (promLog + d.toString()).slice(-20_000)));
    prometheus.stderr?.on("data", (d: Buffer) => (promLog = (promLog + d.toString()).slice(-20_000)));
    await until(async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok, 30_000, `prometheus to be ready\n${promLog}`, 200);
    // Every target scraped and up before the job starts.
    await until(async () => (await query("up == 1")).length === 3, 20_000, "all three targets up", 250);

    await withDiagnostics(mesh, async () => {
      const m = mesh!;
      await m.seed(RECORDS, KEYS);
      const startedAt = Date.now() / 1000;
      const run = runJob(m.executor(m.executors[0]!), { spec: SPEC });
      const result = await within(run.done, 120_000, "the signing job");
      const endedAt = Date.now() / 1000;
      expect(result.error).toBeUndefined();
      expect(result.last?.state).toBe(JobState.SUCCEEDED);
      const id = result.last!.jobId;
      const stats = await m.collection.getBatchStats({ jobId: id });
      const progress = await m.progress();
      job = {
        id,
        signed: progress.signed,
        elapsedMs: Number(result.last!.elapsedMs),
        startedAt,
        endedAt,
        batchesCommitted: Number(stats.batchesCommitted),
        p50: Number(stats.batchLatencyP50Ms),
        p99: Number(stats.batchLatencyP99Ms),
      };
    });
    // Wait until every target was scraped after the job ended (the RPC metrics of the last
    // commit are recorded just after the commit itself).
    await until(async () => (await scalar("min(timestamp(up))")) > job.endedAt + 0.5, 15_000, "a scrape of every target after the job", 250);
  }, 240_000);

  afterAll(async () => {
    prometheus?.kill("SIGTERM");
    if (prometheus && prometheus.exitCode === null) await new Promise((r) => prometheus!.once("exit", r));
    await mesh?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("counts exactly the records and batches the job committed", async () => {
    expect(job.signed).toBe(RECORDS);
    expect(await scalar("sum(keymesh_records_signed_total)")).toBe(job.signed);
    expect(await scalar("sum(keymesh_batches_committed_total)")).toBe(job.batchesCommitted);
    expect(await scalar('sum(keymesh_batch_duration_count{outcome="committed"})')).toBe(job.batchesCommitted);
    // Every committed batch is a claim and a commit on signing's ClaimStream to collection: two
    // request messages at least (sizes are recorded per message, the call's counts only when
    // the long-lived stream ends), seen alike by collection's server and signing's client, and
    // carrying every signature.
    const stream = 'rpc_service="keymesh.collection.v1.CollectionService",rpc_method="ClaimStream"';
    const requests = await scalar(`sum(rpc_server_request_size_count{${stream}})`);
    expect(requests).toBeGreaterThanOrEqual(2 * job.batchesCommitted);
    expect(await scalar(`sum(rpc_client_request_size_count{${stream}})`)).toBe(requests);
    expect(await scalar(`sum(rpc_server_request_size_sum{${stream}})`)).toBeGreaterThan(job.signed * 64);
  });

  it("shows a signing rate during the job that adds up to the records signed", async () => {
    const params = new URLSearchParams({
      query: `sum(rate(keymesh_records_signed_total[${RATE_WINDOW_S}s]))`,
      start: String(Math.floor(job.startedAt) - 2),
      end: String(Math.ceil(job.endedAt) + 4),
      step: "1",
    });
    const body = (await (await fetch(`${promUrl}/api/v1/query_range?${params}`)).json()) as { data: { result: Sample[] } };
    const values = (body.data.result[0]?.values ?? []).map(([, v]) => Number(v));
    const peak = Math.max(...values);
    // A 3 s window spreads a job shorter than that over the whole window: the most it can show
    // is the records over the longer of the two.
    const visible = job.signed / Math.max(job.elapsedMs / 1000, RATE_WINDOW_S);
    expect(peak).toBeGreaterThan(0);
    expect(peak, `peak ${peak}/s against ${visible}/s over ${job.elapsedMs} ms`).toBeGreaterThanOrEqual(visible * 0.5);
    // A rate sampled every second integrates to the records signed (up to the window's edges).
    const integral = values.reduce((a, b) => a + b, 0);
    expect(integral / job.signed, `integral ${integral} against ${job.signed} records`).toBeGreaterThan(0.6);
    expect(integral / job.signed).toBeLessThan(1.4);
  });

  it("estimates batch latency quantiles in the buckets of the job's exact ones", async () => {
    expect(job.p50).toBeGreaterThan(0);
    expect(job.p99).toBeGreaterThanOrEqual(job.p50);
    const bounds = (await query('sum by (le) (keymesh_batch_duration_bucket{outcome="committed"})'))
      .map((s) => Number(s.metric.le))
      .filter(Number.isFinite)
      .sort((a, b) => a - b);
    for (const [q, exact] of [
      [0.5, job.p50],
      [0.99, job.p99],
    ] as const) {
      const estimate = await scalar(`histogram_quantile(${q}, sum by (le) (keymesh_batch_duration_bucket{outcome="committed"}))`);
      expect(estimate, `p${q * 100}`).toBeGreaterThan(0);
      // The estimate interpolates inside a bucket: the exact value's bucket or, at a rank
      // boundary, a neighbour.
      const i = bounds.findIndex((b) => exact <= b);
      const lo = i >= 2 ? bounds[i - 2]! : 0;
      const hi = bounds[Math.min(bounds.length - 1, i + 1)]!;
      expect(estimate, `p${q * 100}: estimate ${estimate} ms, exact ${exact} ms`).toBeGreaterThanOrEqual(lo);
      expect(estimate, `p${q * 100}: estimate ${estimate} ms, exact ${exact} ms`).toBeLessThanOrEqual(hi);
    }
    expect(await scalar("sum(keymesh_lease_wait_count)")).toBeGreaterThanOrEqual(job.batchesCommitted);
  });

  it("answers every PromQL expression of the Grafana dashboard with data", async () => {
    // Just after the job, with a window that holds all of it: the job takes a few seconds, and
    // a rate needs two scrapes of a series inside its window.
    const at = job.endedAt + 1;
    const window = `${Math.max(5, Math.ceil(at - job.startedAt) + 2)}s`;
    const exprs = dashboardExpressions();
    expect(exprs.length).toBeGreaterThanOrEqual(8);
    const empty: string[] = [];
    for (const expr of exprs) {
      // Grafana's $__rate_interval is at least four scrape intervals (1s scrapes here).
      const result = await query(expr.replaceAll("$__rate_interval", window), at);
      if (result.length === 0) empty.push(expr);
    }
    expect(empty).toEqual([]);
  });

  it("queries only metrics the code declares and the mesh exports", async () => {
    const exported = new Set(((await (await fetch(`${promUrl}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data);
    const declared = new Set([...declaredMetrics().keys(), ...RPC_METRIC_NAMES].map(prometheusName));
    const used = new Set(dashboardExpressions().flatMap(metricNames));
    for (const core of ["keymesh_records_signed_total", "keymesh_batch_duration_bucket", "keymesh_lease_wait_bucket", "keymesh_batches_refused_total", "rpc_server_duration_count"]) {
      expect(used, "the dashboard's core panels").toContain(core);
    }
    for (const name of used) {
      expect(declared.has(name.replace(/_(bucket|sum|count|total)$/, "")), `${name} is declared in the code`).toBe(true);
      expect(exported.has(name), `${name} is exported by the mesh`).toBe(true);
    }
  });
});

/** Every `expr` of every panel of the dashboard. */
function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { panels: { targets?: { expr?: string }[] }[] };
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).filter((e): e is string => typeof e === "string");
}

/** The metric names an expression selects: identifiers followed by `{`, `[` or `)`, outside label lists. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, '""')
    .replace(/\{[^}]*\}/g, "{}")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  const words = bare.match(/(?<![\w$])[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*[{[)]|\s*$)/g) ?? [];
  return words.filter((w) => !["or", "and", "unless"].includes(w));
}

/** How the OpenTelemetry Prometheus exporter names a metric (before `_total`/`_bucket`...). */
function prometheusName(name: string): string {
  return name.replace(/[^a-zA-Z0-9_:]/g, "_");
}
