/**
 * Two real processes, each started with the telemetry preload, exporting to
 * an in-test OTLP receiver: one trace must span the client, the server, and
 * the server's MariaDB (knex) and Redis (ioredis) calls. This is what
 * proves the instrumentations are live when the app is ESM run by tsx.
 * MariaDB at 127.0.0.1:3306 and Redis at 127.0.0.1:6379 must be up.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { beforeEach, describe, expect, it } from "vitest";
import { startOtlpReceiver, type ReceivedSpan } from "./support/otlp-receiver.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const preload = pathToFileURL(fileURLToPath(new URL("../services/shared/telemetry/preload.ts", import.meta.url))).href;
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

/** Starts `node --import tsx --import <preload> <script>` and collects its output. */
function startNode(script: string, args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", "--import", preload, script, ...args], {
    cwd: root,
    env: { ...withoutOtel(process.env), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

function withoutOtel(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => !e[0].startsWith("OTEL_") && e[1] !== undefined),
  );
}

async function untilPort(server: ReturnType<typeof startNode>): Promise<number> {
  return new Promise((resolve, reject) => {
    const onData = () => {
      const match = /PORT (\d+)/.exec(server.stdout());
      if (match) resolve(Number(match[1]));
    };
    server.child.stdout?.on("data", onData);
    void server.exited.then((code) => reject(new Error(`server exited (${code}) before listening:\n${server.stderr()}`)));
  });
}

/**
 * Runs both processes once and returns every span they exported. Each test
 * awaits it, so a backend that is down fails every test instead of skipping.
 */
async function runBothProcesses(): Promise<ReceivedSpan[]> {
  const receiver = await startOtlpReceiver();
  const children: ChildProcess[] = [];
  try {
    const common = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100" };
    const server = startNode(fixture("telemetry-server.ts"), [], { ...common, OTEL_SERVICE_NAME: "keymesh-test-a" });
    children.push(server.child);
    const port = await untilPort(server);

    // The client exports OTLP/JSON, the server OTLP/protobuf: both exporters and both decoders run.
    const client = startNode(fixture("telemetry-client.ts"), [`http://127.0.0.1:${port}`], {
      ...common,
      OTEL_SERVICE_NAME: "keymesh-test-b",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    });
    children.push(client.child);
    if ((await client.exited) !== 0) throw new Error(`client failed:\n${client.stderr()}`);
    expect(JSON.parse(client.stdout())).toEqual({ status: 1, watched: 2 });

    // The server drains on SIGTERM and flushes through shutdownTelemetry().
    server.child.kill("SIGTERM");
    if ((await server.exited) !== 0) throw new Error(`server failed:\n${server.stderr()}`);

    // Nothing to wait for: both processes exported everything before exiting.
    return receiver.spans();
  } finally {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await receiver.close();
  }
}

describe("telemetry across processes", () => {
  let run: Promise<ReceivedSpan[]> | undefined;
  let spans: ReceivedSpan[] = [];
  beforeEach(async () => {
    run ??= runBothProcesses();
    spans = await run;
  });

  const find = (service: string, kind: string, name: string) => {
    const span = spans.find((s) => s.serviceName === service && s.kind === kind && s.name === name);
    if (!span) throw new Error(`no ${kind} span ${name} from ${service}; got ${spans.map((s) => `${s.serviceName}:${s.kind}:${s.name}`).join(", ")}`);
    return span;
  };
  const childrenOf = (parent: ReceivedSpan) => spans.filter((s) => s.parentSpanId === parent.spanId);

  it("joins the client and the server span in one trace", () => {
    const client = find("keymesh-test-b", "CLIENT", "grpc.health.v1.Health/Check");
    const server = find("keymesh-test-a", "SERVER", "grpc.health.v1.Health/Check");
    expect(server.traceId).toBe(client.traceId);
    expect(server.parentSpanId).toBe(client.spanId);
    expect(client.parentSpanId).toBe("");
    for (const span of [client, server]) {
      expect(span.attributes).toMatchObject({
        "rpc.system": "grpc",
        "rpc.service": "grpc.health.v1.Health",
        "rpc.method": "Check",
        "rpc.grpc.status_code": 0,
      });
    }
  });

  it("records the handler's SQL statement (one span, named by the conventions) and Redis call as children of the server span", () => {
    const server = find("keymesh-test-a", "SERVER", "grpc.health.v1.Health/Check");
    const direct = childrenOf(server);
    const sql = spans.filter((s) => s.traceId === server.traceId && (s.attributes["db.system.name"] === "mysql" || s.scope.includes("mysql")));
    expect(sql, "exactly one SQL span for the one statement").toHaveLength(1);
    const sqlSpan = sql[0]!;
    expect(sqlSpan.parentSpanId).toBe(server.spanId);
    expect(sqlSpan.kind).toBe("CLIENT");
    // A raw statement without a table: `{db.operation.name}` alone.
    expect(sqlSpan.name).toBe("SELECT");
    expect(sqlSpan.attributes).toMatchObject({
      "db.system.name": "mysql",
      "db.system": "mysql",
      "db.namespace": "test",
      "db.operation.name": "SELECT",
      "db.query.text": "select ? as service",
    });
    const redisSpan = direct.find((s) => s.scope === "@opentelemetry/instrumentation-ioredis");
    expect(redisSpan?.name).toBe("set");
    expect(redisSpan?.traceId).toBe(server.traceId);
  });

  it("keeps the server span active inside a response stream", () => {
    const client = find("keymesh-test-b", "CLIENT", "grpc.health.v1.Health/Watch");
    const server = find("keymesh-test-a", "SERVER", "grpc.health.v1.Health/Watch");
    expect(server.parentSpanId).toBe(client.spanId);
    const sent = server.events.filter((e) => e.name === "message" && e.attributes["message.type"] === "SENT");
    expect(sent.map((e) => e.attributes["message.id"])).toEqual([1, 2]);
    expect(client.attributes["rpc.message.received_count"]).toBe(2);

    const probes = childrenOf(server).filter((s) => s.name === "health.probe");
    expect(probes).toHaveLength(2);
    for (const probe of probes) {
      expect(childrenOf(probe).map((s) => `${s.scope}:${s.name}`)).toEqual(["@opentelemetry/instrumentation-ioredis:incr"]);
    }
  });
});
