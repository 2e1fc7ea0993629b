/**
 * Metrics from a real `keymesh serve` process (all services, embedded SQLite): OTLP/JSON
 * metric export with the same OTEL_* variables as traces, trace ids on the per-call log lines,
 * and `keymesh top` against the live process, against nothing, and interrupted with Ctrl-C.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { main } from "../cli/main.js";
import { parseExposition } from "../cli/commands/top.js";
import { readRootToken } from "../services/shared/root-token.js";
import { bearer } from "./support/host.js";
import { KEYMESH_BIN, spawnKeymesh, type KeymeshProcess } from "./support/process.js";
import { freePort } from "./support/redis-nodes.js";

/** An OTLP/HTTP JSON sink: keeps the metric names it receives, accepts traces. */
async function startOtlpSink() {
  const metricNames = new Set<string>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/metrics") {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          resourceMetrics?: { scopeMetrics?: { metrics?: { name: string }[] }[] }[];
        };
        for (const rm of body.resourceMetrics ?? []) for (const sm of rm.scopeMetrics ?? []) for (const m of sm.metrics ?? []) metricNames.add(m.name);
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    metricNames,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Runs `keymesh <args>` in this process and captures its output. */
async function runCli(args: string[], env: Record<string, string> = {}) {
  let stdout = "";
  let stderr = "";
  const sink = (append: (s: string) => void) =>
    new Writable({
      write(chunk, _enc, done) {
        append(String(chunk));
        done();
      },
    });
  const code = await main(args, { stdout: sink((s) => (stdout += s)), stderr: sink((s) => (stderr += s)), env });
  return { code, stdout, stderr };
}

describe("a serve process with metrics", () => {
  let dataDir = "";
  let otlp: Awaited<ReturnType<typeof startOtlpSink>>;
  let serve: KeymeshProcess;
  let url = "";
  let metricsUrl = "";

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-metrics-"));
    otlp = await startOtlpSink();
    const [port, metricsPort] = [await freePort(), await freePort()];
    url = `http://127.0.0.1:${port}`;
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    // --dev, as `npm start` runs it: the test and `keymesh top` call with its root token.
    serve = spawnKeymesh(["serve", "--dev"], {
      KEYMESH_DATA_DIR: dataDir,
      KEYMESH_PORT: String(port),
      KEYMESH_METRICS_PORT: String(metricsPort),
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_METRIC_EXPORT_INTERVAL: "500",
    });
    await serve.waitForLog((l) => l.msg === "serving metrics", 60_000);
    const transport = createGrpcTransport({ baseUrl: url, interceptors: [bearer(readRootToken(dataDir)!)] });
    await createClient(CollectionService, transport).seedRecords({ count: 2000, payloadSize: 32 });
    await createClient(KeyManagementService, transport).createKeyringKeys({ count: 4 });
    for await (const _ of createClient(ExecutorService, transport).runJob({ spec: { batchSize: 200, concurrency: 2 } })) {
      // until the job is done
    }
  }, 120_000);

  afterAll(async () => {
    serve?.child.kill("SIGTERM");
    await serve?.exited;
    await otlp?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("exports RPC and domain metrics over OTLP", async () => {
    // Exported every 500 ms: wait for every one of them (a job can end between two exports).
    const names = ["keymesh.records.signed", "keymesh.batch.duration", "keymesh.lease.wait", "rpc.server.duration", "rpc.client.duration", "rpc.server.request.size"];
    const deadline = Date.now() + 10_000;
    while (!names.every((n) => otlp.metricNames.has(n)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const name of names) expect(otlp.metricNames, name).toContain(name);
  });

  it("serves the same metrics at /metrics, and nothing else on that port", async () => {
    const series = parseExposition(await (await fetch(metricsUrl)).text());
    const signed = series.filter((s) => s.name === "keymesh_records_signed_total").reduce((n, s) => n + s.value, 0);
    expect(signed).toBe(2000);
    expect((await fetch(metricsUrl.replace("/metrics", "/"))).status).toBe(404);
  });

  it("writes trace_id and span_id on the log line of every traced call", async () => {
    // RunBatches: the executor's stream to signing, a call between services within the process.
    const line = await serve.waitForLog((l) => l.msg === "rpc" && l.method === "RunBatches");
    expect(line.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(line.span_id).toMatch(/^[0-9a-f]{16}$/);
  });

  it("keymesh top shows progress, rate, jobs, keys busy and errors of the live mesh", async () => {
    const { code, stdout, stderr } = await runCli(["top", "--once", "--interval", "300", "--url", url, "--metrics", metricsUrl], { KEYMESH_DATA_DIR: dataDir });
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(/records\s+2,000 \/ 2,000 signed \(100\.0%\)/);
    expect(stdout).toMatch(/rate\s+0 records\/s/);
    expect(stdout).toMatch(/jobs\s+0 running/);
    expect(stdout).toMatch(/keys busy\s+0/);
    expect(stdout).toMatch(/errors\s+0 server faults/);
    expect(stdout).toContain("1/1 endpoints answering");
  });
});

describe("keymesh top without a mesh", () => {
  it("says what is unavailable and exits 1 with --once", async () => {
    const port = await freePort();
    const { code, stdout } = await runCli(["top", "--once", "--interval", "100", "--url", `http://127.0.0.1:${port}`, "--metrics", `http://127.0.0.1:${port}/metrics`]);
    expect(code).toBe(1);
    expect(stdout).toMatch(/mesh unavailable: .*ECONNREFUSED.* \(retrying\)/);
    expect(stdout).toContain("0/1 endpoints answering");
  });

  it("keeps refreshing while the mesh is down and exits 0 on Ctrl-C", async () => {
    const port = await freePort();
    const top = spawnKeymesh(["top", "--interval", "100", "--url", `http://127.0.0.1:${port}`]);
    const deadline = Date.now() + 30_000;
    while ((top.stdout().match(/keymesh top/g) ?? []).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect((top.stdout().match(/mesh unavailable/g) ?? []).length).toBeGreaterThanOrEqual(3);
    top.child.kill("SIGINT");
    const exit = await top.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(top.stderr()).toBe("");
  }, 40_000);

  it("redraws in place on a terminal and restores the cursor on Ctrl-C", async () => {
    const port = await freePort();
    // A pseudo-terminal from Python's pty module (Debian's python3, as the Python client test uses).
    const script = `
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], sys.argv[2], "top", "--interval", "200", "--url", sys.argv[3]])
out, sent, end = b"", False, time.time() + 25
while time.time() < end:
    if select.select([fd], [], [], 0.1)[0]:
        try:
            out += os.read(fd, 65536)
        except OSError:
            break
    if not sent and out.count(b"keymesh top") >= 3:
        os.kill(pid, signal.SIGINT)
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(str(os.WEXITSTATUS(status)) + "\\n" + out.decode())
`;
    const out = execFileSync("python3", ["-c", script, process.execPath, KEYMESH_BIN, `http://127.0.0.1:${port}`], { encoding: "utf8", timeout: 40_000 });
    const [status, ...rest] = out.split("\n");
    const screen = rest.join("\n");
    expect(status).toBe("0");
    expect(screen.startsWith("\x1b[?25l"), "hides the cursor").toBe(true);
    // Each later frame moves back to the first line of the previous one and clears below it.
    expect(screen.match(/\x1b\[\d+F\x1b\[J/g)?.length ?? 0).toBeGreaterThanOrEqual(2);
    expect(screen.trimEnd().endsWith("\x1b[?25h"), "shows the cursor again").toBe(true);
  }, 60_000);
});
