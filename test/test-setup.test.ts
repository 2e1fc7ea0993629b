/**
 * scripts/test-setup.js, the first step of `npm test`: on a prepared machine it passes; with a
 * command missing it names the Debian package and the exact command, and fails. `--check`
 * keeps it from installing anything while this test hides commands from it.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const script = fileURLToPath(new URL("../scripts/test-setup.js", import.meta.url));
const setup = (env: Record<string, string>) =>
  spawnSync(process.execPath, [script, "--check"], { env: { ...process.env, ...env }, encoding: "utf8", timeout: 30_000 });

describe("scripts/test-setup.js", () => {
  it("passes on this machine, which `npm test` prepared with it", () => {
    const res = setup({});
    expect(res.stderr).toBe("");
    expect(res.status).toBe(0);
    expect(res.stdout).toContain("prometheus");
    expect(res.stdout).toContain("MariaDB answers on 127.0.0.1:3306");
    expect(res.stdout).toContain("Redis answers on 127.0.0.1:6379");
  });

  it("names the missing packages and the command that installs them, and fails", () => {
    // An empty PATH: protoc and grpc_python_plugin are gone; the checks by absolute path
    // (Debian's python3, /usr/sbin/nginx, /usr/bin/prometheus) still find theirs.
    const empty = mkdtempSync(join(tmpdir(), "keymesh-path-"));
    const res = setup({ PATH: empty });
    rmSync(empty, { recursive: true });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain("missing Debian packages: protobuf-compiler (test/python-client.test.ts), protobuf-compiler-grpc");
    expect(res.stderr).toContain("sudo apt-get update && sudo apt-get install -y protobuf-compiler protobuf-compiler-grpc\n");
  });
});
