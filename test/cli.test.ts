import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { BOUNDS } from "../cli/bounds.js";
import { connectTo } from "../cli/connect.js";
import { main } from "../cli/main.js";
import { readRootToken } from "../services/shared/root-token.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";

/** Nothing listens on port 1: connecting is refused at once. */
const DOWN = "http://127.0.0.1:1";
const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** Runs the dispatcher in-process with captured output and a clean environment. */
async function keymesh(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
  stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
  // The data directory of the test's `serve --dev`: the CLI finds the root token there.
  const code = await main(args, { stdout, stderr, env: { KEYMESH_DATA_DIR: dataDir } });
  return { code, stdout: out, stderr: err };
}

/** The lines a failure printed: the CLI promises exactly one. */
const lines = (text: string) => text.split("\n").filter((l) => l !== "");

let server: KeymeshProcess;
let base: string;
let dataDir: string;
let token: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "keymesh-cli-"));
  server = spawnKeymesh(["serve", "--port", "0", "--dev"], { KEYMESH_DATA_DIR: dataDir });
  base = String((await server.waitForLog((l) => l.msg === "keymesh serving")).url);
  token = readRootToken(dataDir)!;
});

afterAll(async () => {
  server?.child.kill("SIGTERM");
  await server?.exited;
  rmSync(dataDir, { recursive: true, force: true });
});

describe("keymesh failures print one line that says what to do", () => {
  it("server not running: names the address and `npm start`, exit 1, no stack trace", async () => {
    const proc = spawnKeymesh(["sign", "--records", "10", "--url", DOWN]);
    expect((await proc.exited).code).toBe(1);
    expect(lines(proc.stderr())).toEqual([
      "keymesh sign: cannot reach http://127.0.0.1:1 (connection refused) — is `npm start` running? (another address: --url or KEYMESH_URL)",
    ]);
    expect(proc.stdout()).toBe("");
  });

  it("verify with the server not running, the address from KEYMESH_URL", async () => {
    const proc = spawnKeymesh(["verify"], { KEYMESH_URL: DOWN });
    expect((await proc.exited).code).toBe(1);
    expect(lines(proc.stderr())).toEqual([expect.stringMatching(/^keymesh verify: cannot reach http:\/\/127\.0\.0\.1:1 \(connection refused\) — is `npm start` running\?/)]);
  });

  it("unknown job: says the job does not exist and how to start one, exit 1", async () => {
    const res = await keymesh("sign", "--job", "nonexistent", "--url", base);
    expect(res.code).toBe(1);
    expect(lines(res.stderr)).toEqual(["keymesh sign: job nonexistent does not exist — run `keymesh sign` without --job to start a new job"]);
  });

  it.each([
    [["--records", "-5"], '--records must be an integer from 1 to 10000000, got "-5"'],
    [["--records", "99999999999"], '--records must be an integer from 1 to 10000000, got "99999999999"'],
    [["--records", "1e3"], '--records must be an integer from 1 to 10000000, got "1e3"'],
    [["--keys", "0"], '--keys must be an integer from 1 to 10000, got "0"'],
    [["--batch-size", "10001"], '--batch-size must be an integer from 1 to 10000, got "10001"'],
    [["--concurrency", "abc"], '--concurrency must be an integer from 1 to 256, got "abc"'],
    [["--lease-ttl-ms", "999"], '--lease-ttl-ms must be an integer from 1000 to 600000, got "999"'],
    [["--records"], "--records needs a value"],
    [["--recods", "5"], "unknown option --recods"],
    [["--json=yes"], "--json takes no value"],
    [["extra"], 'unexpected argument "extra"'],
  ])("bad numbers and flags: sign %j is a usage error naming the flag, exit 2", async (args, message) => {
    const before = await connectTo(base, token)(CollectionService).getProgress({});
    const res = await keymesh("sign", ...args, "--url", base);
    expect(res.code).toBe(2);
    expect(lines(res.stderr)).toEqual([`keymesh sign: ${message} — see \`keymesh sign --help\``]);
    expect((await connectTo(base, token)(CollectionService).getProgress({})).total).toBe(before.total);
  });

  it("the CLI's bounds are the server's: the largest value passes the CLI, one more is refused by both", async () => {
    const client = connectTo(base, token);
    const refused = async (call: () => Promise<unknown>) => {
      const err = await call().then(() => undefined, (e: unknown) => ConnectError.from(e));
      return err?.code;
    };
    const runJob = async (spec: { batchSize?: number; concurrency?: number; leaseTtlMs?: number }) => {
      for await (const _ of client(ExecutorService).runJob({ spec: { batchSize: 10, ...spec } })) return;
    };
    const cases: Array<[flag: string, max: number, server: (n: number) => Promise<unknown>]> = [
      ["--records", BOUNDS.records.max, (n) => client(CollectionService).seedRecords({ count: n })],
      ["--keys", BOUNDS.keys.max, (n) => client(KeyManagementService).createKeyringKeys({ count: n })],
      ["--batch-size", BOUNDS.batchSize.max, (n) => runJob({ batchSize: n })],
      ["--concurrency", BOUNDS.concurrency.max, (n) => runJob({ concurrency: n })],
      ["--lease-ttl-ms", BOUNDS.leaseTtlMs.max, (n) => runJob({ leaseTtlMs: n })],
    ];
    for (const [flag, max, serverCall] of cases) {
      // The largest value gets past validation and fails only at the (unreachable) server.
      const ok = await keymesh("sign", flag, String(max), "--url", DOWN);
      expect(ok.stderr, flag).toContain("cannot reach");
      expect((await keymesh("sign", flag, String(max + 1), "--url", DOWN)).code, flag).toBe(2);
      expect(await refused(() => serverCall(max + 1)), flag).toBe(Code.InvalidArgument);
    }
  });

  it("serve --port abc blames --port, not KEYMESH_PORT, exit 2", async () => {
    const res = await keymesh("serve", "--port", "abc");
    expect(res.code).toBe(2);
    expect(lines(res.stderr)).toEqual([
      'keymesh serve: --port: expected a TCP port (an integer between 0 and 65535), got "abc" — see `keymesh serve --help`',
    ]);
    const negative = await keymesh("serve", "-p", "-1");
    expect(negative.code).toBe(2);
    expect(negative.stderr).toContain('--port: expected a TCP port (an integer between 0 and 65535), got "-1"');
  });
});

describe("keymesh help and version", () => {
  it("`help sign` and `sign --help` print sign's help, not the command list", async () => {
    const help = await keymesh("help", "sign");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: keymesh sign \[options\]/);
    expect(help.stdout).toContain("--records N");
    expect(help.stdout).not.toContain("Commands:");
    expect(await keymesh("sign", "--help")).toEqual(help);
    expect((await keymesh("help", "serve")).stdout).toMatch(/^Usage: keymesh serve/);
  });

  it("`help` lists the commands; `help nope` and no command are usage errors", async () => {
    const help = await keymesh("help");
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Commands:");
    for (const name of ["serve", "migrate", "sign", "verify"]) expect(help.stdout).toMatch(new RegExp(`^  ${name} `, "m"));
    const unknown = await keymesh("help", "nope");
    expect(unknown.code).toBe(2);
    expect(lines(unknown.stderr)).toEqual(['keymesh: unknown command "nope" — run `keymesh --help` for the list']);
    const none = await keymesh();
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("Usage: keymesh <command>");
  });

  it("--version and -V print package.json's version", async () => {
    expect(await keymesh("--version")).toEqual({ code: 0, stdout: `keymesh ${VERSION}\n`, stderr: "" });
    expect(await keymesh("-V")).toEqual({ code: 0, stdout: `keymesh ${VERSION}\n`, stderr: "" });
    const proc = spawnKeymesh(["--version"]);
    expect((await proc.exited).code).toBe(0);
    expect(proc.stdout()).toBe(`keymesh ${VERSION}\n`);
  });
});

describe("Ctrl-C on keymesh sign", () => {
  it("prints the job id and the command that finishes the job, exits 130; that command finishes it", { timeout: 180_000 }, async () => {
    const sign = spawnKeymesh(["sign", "--records", "1500", "--keys", "4", "--batch-size", "50", "--lease-ttl-ms", "2000", "--url", base], { KEYMESH_DATA_DIR: dataDir });
    // The first progress line means the job exists and is running.
    for (let i = 0; !/^\[[#.]+\]/m.test(sign.stderr()); i++) {
      if (sign.child.exitCode !== null || i > 600) throw new Error(`no progress line:\n${sign.stderr()}`);
      await sleep(100);
    }
    sign.child.kill("SIGINT");
    const { code } = await sign.exited;
    expect(code).toBe(130);
    const last = lines(sign.stderr()).at(-1)!;
    const match = /^keymesh sign: interrupted; job (job-[0-9a-f-]+) is unfinished \((\d+)\/(\d+) records signed\) — finish it with: (keymesh sign .*)$/.exec(last);
    expect(match, sign.stderr()).not.toBeNull();
    const [, jobId, , , command] = match!;
    expect(command).toBe(`keymesh sign --job ${jobId} --url ${base} --lease-ttl-ms 2000`);
    // The job really was left with records to sign.
    const left = await connectTo(base, token)(CollectionService).getProgress({});
    expect(left.signed).toBeLessThan(left.total);

    const resume = spawnKeymesh([...command!.split(" ").slice(1), "--json"], { KEYMESH_DATA_DIR: dataDir });
    expect((await resume.exited).code, resume.stderr()).toBe(0);
    const summary = JSON.parse(resume.stdout()) as Record<string, unknown>;
    expect(summary).toMatchObject({ jobId, state: "succeeded", duplicates: 0, verification: { ok: true, unsigned: 0, invalid: 0 } });
    expect(summary.recordsSigned).toBe(summary.totalRecords);
    expect(summary.signedByThisRun).toBeGreaterThan(0);
  });
});
