import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadMasterKeyring } from "./master-keys.js";

const dirs: string[] = [];
const dataDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-mk-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Collects what loadMasterKeyring logs. */
function recorder() {
  const lines: Array<{ level: string; fields: Record<string, unknown>; msg: string }> = [];
  const log = (level: string) => (fields: Record<string, unknown>, msg: string) => void lines.push({ level, fields, msg });
  return { lines, logger: { warn: log("warn"), info: log("info") } as never };
}

describe("development master keys", () => {
  it("warns once, with the file, that generated keys are for development only", () => {
    const dir = dataDir();
    const { lines, logger } = recorder();
    loadMasterKeyring({ dataDir: dir, logger });
    // The keys and signing services both load the ring in one process: one line.
    loadMasterKeyring({ dataDir: dir, logger });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "warn", fields: { file: join(dir, "master-keys.json") } });
    expect(lines[0]!.msg).toContain("for development only");
    const key = (JSON.parse(readFileSync(join(dir, "master-keys.json"), "utf8")) as { keys: Record<string, string> }).keys["1"]!;
    expect(JSON.stringify(lines)).not.toContain(key);
  });

  it("says which file is in use when the keys already exist, and nothing for KEYMESH_MASTER_KEYS", () => {
    const dir = dataDir();
    loadMasterKeyring({ dataDir: dir });
    const { lines, logger } = recorder();
    loadMasterKeyring({ dataDir: dir, logger });
    expect(lines).toEqual([expect.objectContaining({ level: "info", fields: expect.objectContaining({ file: join(dir, "master-keys.json") }) })]);

    const quiet = recorder();
    loadMasterKeyring({ spec: `1:${Buffer.alloc(32, 7).toString("base64")}`, dataDir: dataDir(), logger: quiet.logger });
    expect(quiet.lines).toEqual([]);
  });
});
