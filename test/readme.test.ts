import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";

const run = promisify(execFile);

/**
 * The README's `buf curl` and `curl` lines, run in order against a live `keymesh serve`
 * (embedded storage, like `npm start`), so the README cannot rot.
 */
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const lines = readme
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l.startsWith("npx buf curl ") || l.startsWith("curl "));

/** Splits a shell line into words, honouring single quotes (all the README uses). */
function words(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

const UNBUILT = ["keymesh.auth.v1.", "keymesh.messages.v1."];

describe("README examples", () => {
  let server: KeymeshProcess;
  let base: string;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-readme-"));
    server = spawnKeymesh(["serve", "--port", "0"], { KEYMESH_DATA_DIR: dataDir });
    base = String((await server.waitForLog((l) => l.msg === "keymesh serving")).url);
  });
  afterAll(async () => {
    server?.child.kill("SIGTERM");
    await server?.exited;
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("has examples to run", () => {
    expect(lines.length).toBeGreaterThanOrEqual(10);
  });

  it("runs every buf curl and curl line against a live server", { timeout: 180_000 }, async () => {
    for (const line of lines) {
      const [cmd, ...args] = words(line.replaceAll("http://localhost:8080", base));
      const file = cmd === "npx" ? join("node_modules", ".bin", args.shift()!) : cmd!;
      const unbuilt = UNBUILT.some((p) => line.includes(p));
      const result = await run(file, args, { timeout: 15_000 }).then(
        (r) => ({ ok: true, out: r.stdout + r.stderr }),
        (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` }),
      );
      if (unbuilt) {
        expect(result.out, line).toContain("unimplemented");
        continue;
      }
      expect(result.ok, `${line}\n${result.out}`).toBe(true);
      if (line.includes("--list-services")) expect(result.out).toContain("keymesh.executor.v1.ExecutorService");
      if (line.includes("Health/Check")) expect(result.out).toContain("SERVING");
      if (line.includes("RunJob")) expect(result.out).toContain("JOB_STATE_SUCCEEDED");
      if (line.includes("GetRecord")) expect(result.out).toMatch(/"signature"/);
      if (line.includes("SigningService/Verify")) expect(JSON.parse(result.out)).toEqual({});
    }
  });
});
