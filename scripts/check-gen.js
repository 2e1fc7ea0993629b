#!/usr/bin/env node
// Fails when gen/ is not exactly what `buf generate` produces from proto/ (stale or hand-edited).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const out = mkdtempSync(join(tmpdir(), "keymesh-gen-"));
try {
  execFileSync("npx", ["buf", "generate", "--output", out], { stdio: "inherit" });
  try {
    execFileSync("diff", ["-r", "gen", join(out, "gen")], { stdio: "inherit" });
  } catch {
    console.error("gen/ is stale: run `npm run generate` and commit the result.");
    process.exit(1);
  }
  console.log("gen/ is up to date");
} finally {
  rmSync(out, { recursive: true, force: true });
}
