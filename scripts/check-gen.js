#!/usr/bin/env node
// Fails when gen/ is not exactly what `buf generate` produces from proto/ (stale or hand-edited).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
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
  // The vendored protovalidate schema must be the one the installed validator was built
  // from: compare the embedded descriptors (scripts/vendor-protovalidate.js writes it).
  const embedded = (file) => readFileSync(file, "utf8").match(/fileDesc\("([^"]+)"/)?.[1];
  const ours = embedded("gen/buf/validate/validate_pb.ts");
  if (!ours || ours !== embedded("node_modules/@bufbuild/protovalidate/dist/esm/gen/buf/validate/validate_pb.js")) {
    console.error("proto/buf/validate/validate.proto differs from @bufbuild/protovalidate's: run `node scripts/vendor-protovalidate.js` and `npm run generate`.");
    process.exit(1);
  }
  console.log("gen/ is up to date");
} finally {
  rmSync(out, { recursive: true, force: true });
}
