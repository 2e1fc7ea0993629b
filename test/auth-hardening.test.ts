import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { afterAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { createAuthModule } from "../services/auth/module.js";
import { createLogger } from "../services/shared/logger.js";
import { bearer, startTestHost } from "./support/host.js";
import { createTestDatabase } from "./support/mysql.js";
import { placeholderModules } from "./support/placeholders.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";
import { deleteKeys, testRedisUrl, uniquePrefix } from "./support/redis.js";

const PASSWORD = "a-long-enough-password";
const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();
afterAll(() => provider.shutdown());

describe("failed-login limits across auth processes sharing Redis", () => {
  const procs: KeymeshProcess[] = [];
  afterAll(async () => {
    for (const p of procs) p.child.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
  });

  it("counts failures on either process against the same limit (10 per username)", { timeout: 180_000 }, async () => {
    const mysql = await createTestDatabase();
    const prefix = uniquePrefix("auth-procs");
    try {
      const env = { KEYMESH_DATABASE_URL: mysql.url, KEYMESH_REDIS_URL: testRedisUrl(), KEYMESH_REDIS_PREFIX: prefix };
      const migrate = spawnKeymesh(["migrate"], env);
      expect((await migrate.exited).code, migrate.stderr()).toBe(0);
      for (let i = 0; i < 2; i++) procs.push(spawnKeymesh(["serve", "auth", "--port", "0", "--no-migrate"], env));
      const urls = await Promise.all(procs.map(async (p) => String((await p.waitForLog((l) => l.msg === "keymesh serving", 60_000)).url)));
      const [a, b] = urls.map((baseUrl) => createClient(AuthService, createGrpcTransport({ baseUrl }))) as [Client<typeof AuthService>, Client<typeof AuthService>];
      await a.register({ username: "erin", password: PASSWORD });
      // Sessions are shared too: a token from one process works on the other.
      const { token } = await a.login({ username: "erin", password: PASSWORD });
      expect((await b.whoAmI({}, { headers: { authorization: `Bearer ${token}` } })).username).toBe("erin");
      for (let i = 0; i < 10; i++) {
        const err = await errorOf((i % 2 === 0 ? a : b).login({ username: "erin", password: `wrong-password-${i}` }));
        expect(err, `failure ${i + 1}`).toMatchObject({ code: Code.Unauthenticated });
      }
      // Five failures each: neither process alone saw ten, together they did.
      for (const client of [a, b]) {
        const limited = await errorOf(client.login({ username: "erin", password: PASSWORD }));
        expect(limited).toMatchObject({ code: Code.ResourceExhausted });
        expect(Number(limited?.metadata.get("retry-after"))).toBeGreaterThan(800);
      }
    } finally {
      await mysql.drop();
      await deleteKeys(prefix);
    }
  });
});

describe("login timing", () => {
  it("takes the same time for an unknown user as for a wrong password (medians of 20 each)", { timeout: 180_000 }, async () => {
    const roomy = { maxFailures: 1_000, windowMs: 60_000 };
    const server = await startTestHost({ services: [createAuthModule({ limits: { username: roomy, peer: roomy } })] });
    try {
      const auth = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
      await auth.register({ username: "frank", password: PASSWORD });
      const timed = async (username: string) => {
        const started = performance.now();
        const err = await errorOf(auth.login({ username, password: "not-the-password" }));
        expect(err?.code).toBe(Code.Unauthenticated);
        return performance.now() - started;
      };
      await timed("frank"); // warm-up: connection, decoy hash
      const wrongPassword: number[] = [];
      const unknownUser: number[] = [];
      // Interleaved, so load on the machine hits both series alike.
      for (let i = 0; i < 20; i++) {
        wrongPassword.push(await timed("frank"));
        unknownUser.push(await timed(`ghost-${i}`));
      }
      const [known, unknown] = [median(wrongPassword), median(unknownUser)];
      // A password check is tens of milliseconds of scrypt; skipping it would halve the time.
      expect(Math.min(known, unknown)).toBeGreaterThan(5);
      expect(Math.abs(known - unknown) / Math.max(known, unknown), `medians ${known.toFixed(1)} vs ${unknown.toFixed(1)} ms`).toBeLessThan(0.2);
    } finally {
      await server.close();
    }
  });
});

describe("canary credentials", () => {
  it("never appear in logs, traces or error messages", { timeout: 120_000 }, async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString("utf8"));
        done();
      },
    });
    const logger = createLogger({ level: "trace", destination: sink });
    const server = await startTestHost({ services: [createAuthModule(), ...placeholderModules(["keys"])], logger });
    const canaryPassword = "canary-password-5Jq9xW";
    const canaryWrong = "canary-wrong-password-Zr81";
    const canaryForged = "kmt_canaryForgedToken0000000000000000000000000";
    const errors: string[] = [];
    const collect = async (p: Promise<unknown>) => {
      const err = await errorOf(p);
      if (err) errors.push(JSON.stringify({ message: err.message, raw: err.rawMessage, metadata: [...err.metadata], details: err.details }));
    };
    let token = "";
    try {
      exporter.reset();
      const auth = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
      await auth.register({ username: "grace", password: canaryPassword });
      token = (await auth.login({ username: "grace", password: canaryPassword })).token;
      const keys = (t: string) => createClient(KeyManagementService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(t)] }));
      await collect(auth.login({ username: "grace", password: canaryWrong }));
      await collect(auth.login({ username: "nobody", password: canaryPassword }));
      await collect(auth.register({ username: "grace", password: canaryPassword }));
      await collect(auth.register({ username: "Bad Name", password: canaryPassword }));
      await collect(keys(token).listKeyringKeys({}));
      await collect(keys(token).createKeyringKeys({ count: 1 }));
      await collect(keys(canaryForged).listKeyringKeys({}));
      await collect(auth.whoAmI({}, { headers: { authorization: `Bearer ${canaryForged}` } }));
      await collect(auth.logout({}, { headers: { authorization: `Bearer ${token}` } }));
      await collect(keys(token).listKeyringKeys({}));
    } finally {
      await server.close();
    }
    const spans = JSON.stringify(exporter.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })));
    expect(errors.length).toBeGreaterThanOrEqual(7);
    expect(lines.length).toBeGreaterThan(10);
    expect(exporter.getFinishedSpans().length).toBeGreaterThan(10);
    for (const [where, text] of [["logs", lines.join("")], ["traces", spans], ["errors", errors.join("\n")]] as const) {
      for (const canary of [canaryPassword, canaryWrong, canaryForged, token]) {
        expect(text.includes(canary), `${where} contain ${canary.slice(0, 10)}…`).toBe(false);
      }
    }
  });
});
