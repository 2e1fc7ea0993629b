import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYMESH_BIN, spawnKeymesh, type KeymeshProcess } from "./support/process.js";

/**
 * The CLI's side of identity against a live `keymesh serve --dev`: register, login (token in
 * the config directory, 0600), whoami, logout, the token sent by every command and its
 * overrides, passwords never taken from argv.
 */

const PASSWORD = "cli-canary-password-4242";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let server: KeymeshProcess;
let dir: string;
let env: Record<string, string>;

function cli(args: string[], input = "", extraEnv: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYMESH_") && k !== "XDG_CONFIG_HOME"));
  const child = spawn(process.execPath, [KEYMESH_BIN, ...args], { env: { ...base, ...env, ...extraEnv }, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  child.stdin.end(input);
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keymesh-cli-auth-"));
  server = spawnKeymesh(["serve", "--port", "0", "--dev"], { KEYMESH_DATA_DIR: join(dir, "data") });
  const url = String((await server.waitForLog((l) => l.msg === "keymesh serving", 60_000)).url);
  env = { KEYMESH_URL: url, KEYMESH_DATA_DIR: join(dir, "data"), XDG_CONFIG_HOME: join(dir, "config"), KEYMESH_LOG_LEVEL: "silent" };
}, 90_000);

afterAll(async () => {
  server?.child.kill("SIGTERM");
  await server?.exited;
  rmSync(dir, { recursive: true, force: true });
});

describe("keymesh CLI identity", () => {
  it("finds the development root token of a local npm start, written private to its owner", async () => {
    expect(statSync(join(dir, "data", "root-token")).mode & 0o777).toBe(0o600);
    const me = await cli(["whoami", "--json"]);
    expect(me.code, me.stderr).toBe(0);
    expect(JSON.parse(me.stdout)).toMatchObject({ kind: "user", username: "root", admin: true });
  });

  it("registers and logs in with the password from stdin, storing the session 0600", { timeout: 60_000 }, async () => {
    const reg = await cli(["register", "cli-user", "--password-stdin"], `${PASSWORD}\n`);
    expect(reg.code, reg.stderr).toBe(0);
    expect(reg.stdout).toContain("registered cli-user");
    const login = await cli(["login", "cli-user", "--password-stdin"], `${PASSWORD}\n`);
    expect(login.code, login.stderr).toBe(0);
    const file = join(dir, "config", "keymesh", "credentials.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, "utf8")).not.toContain(PASSWORD);
    const me = await cli(["whoami", "--json"]);
    expect(JSON.parse(me.stdout)).toMatchObject({ kind: "user", username: "cli-user", admin: false });
    // Every command sends it: a user may verify but not seed and sign.
    expect((await cli(["verify", "--json"])).code).toBe(0);
    const sign = await cli(["sign", "--records", "10", "--json"]);
    expect(sign.code).toBe(1);
    expect(sign.stderr).toMatch(/permission_denied|needs the admin role/);
    for (const out of [reg, login, me, sign]) expect(out.stdout + out.stderr).not.toContain(PASSWORD);
  });

  it("lets --token and KEYMESH_TOKEN override the stored session", async () => {
    const root = readFileSync(join(dir, "data", "root-token"), "utf8").trim();
    expect(JSON.parse((await cli(["whoami", "--json", "--token", root])).stdout).username).toBe("root");
    expect(JSON.parse((await cli(["whoami", "--json"], "", { KEYMESH_TOKEN: root })).stdout).username).toBe("root");
    const bad = await cli(["whoami"], "", { KEYMESH_TOKEN: "kmt_not-a-real-session" });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/not signed in \(the credentials are invalid, expired or revoked\)/);
  });

  it("logs out: the session is revoked on the server and forgotten", async () => {
    const stored = JSON.parse(readFileSync(join(dir, "config", "keymesh", "credentials.json"), "utf8")) as { sessions: Record<string, { token: string }> };
    const token = stored.sessions[env.KEYMESH_URL!]!.token;
    const out = await cli(["logout"]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain("logged out cli-user");
    const reuse = await cli(["whoami"], "", { KEYMESH_TOKEN: token });
    expect(reuse.stderr).toMatch(/not signed in/);
    // Without a stored session the CLI falls back to the local root token again.
    expect(JSON.parse((await cli(["whoami", "--json"])).stdout).username).toBe("root");
  });

  it("never takes a password from argv or a non-terminal stdin without --password-stdin", async () => {
    const out = await cli(["login", "cli-user"], `${PASSWORD}\n`);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("--password-stdin");
    const extra = await cli(["login", "cli-user", PASSWORD]);
    expect(extra.code).toBe(2);
  });
});
