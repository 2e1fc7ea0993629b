/**
 * Runs the Python example client (examples/python/) against a live `keymesh serve`.
 *
 * It proves that stubs generated from proto/ by another language's toolchain (Debian's
 * protoc + grpc_python_plugin, grpcio) interoperate with the server over plain gRPC.
 * Needs: apt-get install -y python3-grpcio protobuf-compiler protobuf-compiler-grpc.
 * When any of them is missing the test fails and says what to install; it never skips.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./support/redis-nodes.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const exampleDir = join(root, "examples", "python");
// Debian's interpreter: it sees python3-grpcio, which a pyenv/venv python3 on PATH may not.
const python = "/usr/bin/python3";
const seedCount = 25;
const PASSWORD = "python-canary-password-7731";

interface CallResult {
  code: string;
  details?: string;
  [field: string]: unknown;
}
interface KeyringKeyJson {
  keyId: string;
  publicKeyHex: string;
  fence: number;
  masterKeyVersion: number;
}
interface Summary {
  target: string;
  error?: string;
  health: Record<string, CallResult & { status?: string }>;
  register?: CallResult;
  login?: CallResult;
  whoAmI: CallResult & { username?: string; admin?: boolean; kind?: string };
  seedRecords: CallResult & { inserted?: number; total?: number };
  getProgress: CallResult & { total?: number; signed?: number; claimed?: number };
  createKeyringKeys: CallResult & { keys?: KeyringKeyJson[] };
  listKeyringKeys: CallResult & { keys?: KeyringKeyJson[]; nextPageToken?: string };
}

function prerequisiteProblems(): string[] {
  const problems: string[] = [];
  const has = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: "ignore" }).status === 0;
  if (!has(python, ["-c", "import grpc, google.protobuf"])) {
    problems.push(`${python} cannot import grpc and google.protobuf (apt-get install -y python3-grpcio)`);
  }
  if (!has("protoc", ["--version"])) problems.push("protoc is missing (apt-get install -y protobuf-compiler)");
  if (!has("sh", ["-c", "command -v grpc_python_plugin"])) {
    problems.push("grpc_python_plugin is missing (apt-get install -y protobuf-compiler-grpc)");
  }
  return problems;
}

/**
 * The test runner's environment without its KEYMESH_* settings (a database or Redis URL,
 * TLS, a port), so the server runs self-contained: embedded SQLite in a fresh data directory.
 */
function serverEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("KEYMESH_")));
}


function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}

async function waitForListening(server: ChildProcess, port: number, output: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(`keymesh serve exited (${server.exitCode ?? server.signalCode}) before listening:\n${output()}`);
    }
    if (await canConnect(port)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`keymesh serve did not listen on 127.0.0.1:${port} within 30s:\n${output()}`);
}

async function stop(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise<void>((r) => server.once("exit", () => r()));
  server.kill("SIGTERM");
  const timer = setTimeout(() => server.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

interface ClientRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

function runClient(target: string, opts: { token?: string; args?: string[]; stdin?: string } = {}): Promise<ClientRun> {
  return new Promise((done, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== "KEYMESH_TOKEN"));
    const child = spawn(python, [join(exampleDir, "keymesh_client.py"), target, "--count", String(seedCount), ...(opts.args ?? [])], {
      cwd: root,
      env: opts.token === undefined ? env : { ...env, KEYMESH_TOKEN: opts.token },
      stdio: ["pipe", "pipe", "pipe"],
    });
    child.stdin.end(opts.stdin ?? "");
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("error", reject);
    child.once("close", (status) => done({ status, stdout, stderr }));
  });
}

describe("Python client generated from proto/", () => {
  let server: ChildProcess | undefined;
  let serverOutput = "";
  let dataDir: string | undefined;
  let summary: Summary;
  let clientStatus: number | null;
  let userRun: ClientRun;
  let anonymousRun: ClientRun;
  // A failed setup (missing toolchain, generator error, server that does not start) fails
  // every test with its message rather than leaving them skipped.
  let setupError: unknown;
  const ready = () => {
    if (setupError) throw setupError;
  };

  beforeAll(async () => {
    try {
      await setUp();
    } catch (err) {
      setupError = err;
    }
  }, 90_000);

  async function setUp(): Promise<void> {
    const problems = prerequisiteProblems();
    if (problems.length > 0) {
      throw new Error(
        "The Python client test needs Debian's gRPC Python toolchain:\n  - " +
          problems.join("\n  - ") +
          "\nInstall with: apt-get install -y python3-grpcio protobuf-compiler protobuf-compiler-grpc",
      );
    }

    const generated = spawnSync("bash", [join(exampleDir, "generate.sh")], { cwd: root, encoding: "utf8" });
    if (generated.status !== 0) {
      throw new Error(`examples/python/generate.sh failed (${generated.status}):\n${generated.stdout}${generated.stderr}`);
    }

    const entry = join(root, "bin", "keymesh.js");
    if (!existsSync(entry)) throw new Error(`${entry} does not exist: nothing to serve`);

    const port = await freePort();
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-python-client-"));
    server = spawn(process.execPath, [entry, "serve", "--port", String(port), "--dev"], {
      cwd: root,
      env: { ...serverEnv(), KEYMESH_DATA_DIR: dataDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    server.stdout!.on("data", (d) => (serverOutput += d));
    server.stderr!.on("data", (d) => (serverOutput += d));
    await waitForListening(server, port, () => serverOutput);

    // As an admin: the development root token `serve --dev` wrote into the data directory.
    const rootToken = readFileSync(join(dataDir, "root-token"), "utf8").trim();
    const client = await runClient(`127.0.0.1:${port}`, { token: rootToken });
    clientStatus = client.status;
    summary = parse(client);
    // As a freshly registered user, and with no credentials at all.
    userRun = await runClient(`127.0.0.1:${port}`, { args: ["--username", "py-user", "--register"], stdin: `${PASSWORD}\n` });
    anonymousRun = await runClient(`127.0.0.1:${port}`);
  }

  function parse(run: ClientRun): Summary {
    try {
      return JSON.parse(run.stdout) as Summary;
    } catch {
      throw new Error(`keymesh_client.py printed no JSON (exit ${run.status}):\n${run.stdout}${run.stderr}`);
    }
  }

  afterAll(async () => {
    if (server) await stop(server);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const expectOk = (rpc: string, result: CallResult) => expect(result.code, `${rpc} returned ${result.code}: ${result.details ?? ""}`).toBe("OK");

  it("reaches the server and exits with a status that matches the calls", () => {
    ready();
    expect(summary.error).toBeUndefined();
    expect(clientStatus, "client exit status: 0 = every call OK, 3 = some call not OK").toBe(0);
  });

  it("reports the server and CollectionService as SERVING via grpc.health.v1", () => {
    ready();
    expect(summary.health[""]).toEqual({ code: "OK", status: "SERVING" });
    expect(summary.health["keymesh.collection.v1.CollectionService"]).toEqual({ code: "OK", status: "SERVING" });
  });

  it("seeds records and reads progress through CollectionService", () => {
    ready();
    const { seedRecords, getProgress } = summary;
    expectOk("SeedRecords", seedRecords);
    expectOk("GetProgress", getProgress);
    // A fresh data directory: the seeded records are all there is.
    expect(seedRecords).toMatchObject({ inserted: seedCount, total: seedCount });
    expect(getProgress).toMatchObject({ total: seedCount, signed: 0, claimed: 0 });
  });

  it("creates and lists keyring keys through KeyManagementService", () => {
    ready();
    const { createKeyringKeys, listKeyringKeys } = summary;
    expectOk("CreateKeyringKeys", createKeyringKeys);
    expectOk("ListKeyringKeys", listKeyringKeys);
    const created = createKeyringKeys.keys!;
    expect(created).toHaveLength(2);
    expect(new Set(created.map((k) => k.keyId)).size).toBe(2);
    for (const key of created) {
      expect(key.keyId).not.toBe("");
      expect(key.publicKeyHex).toMatch(/^[0-9a-f]{64}$/); // 32-byte Ed25519 public key
    }
    const listed = listKeyringKeys.keys!;
    expect(listed.map((k) => k.keyId).sort()).toEqual(created.map((k) => k.keyId).sort());
    for (const key of created) {
      expect(listed.find((k) => k.keyId === key.keyId)?.publicKeyHex).toBe(key.publicKeyHex);
    }
  });

  it("authenticates as the root token's admin", () => {
    ready();
    expect(summary.whoAmI).toMatchObject({ code: "OK", username: "root", admin: true, kind: "PRINCIPAL_KIND_USER" });
  });

  it("registers and logs in a user, who may read but not seed or create keys", () => {
    ready();
    const user = parse(userRun);
    expect(userRun.status).toBe(3);
    expect(user.register?.code).toBe("OK");
    expect(user.login?.code).toBe("OK");
    expect(user.whoAmI).toMatchObject({ code: "OK", username: "py-user", admin: false });
    expectOk("GetProgress", user.getProgress);
    expectOk("ListKeyringKeys", user.listKeyringKeys);
    expect(user.seedRecords.code).toBe("PERMISSION_DENIED");
    expect(user.createKeyringKeys.code).toBe("PERMISSION_DENIED");
    // Neither the password nor the session token is ever printed.
    expect(userRun.stdout + userRun.stderr).not.toContain(PASSWORD);
    expect(userRun.stdout).not.toContain("kmt_");
  });

  it("gets UNAUTHENTICATED for every keymesh call without credentials", () => {
    ready();
    const anonymous = parse(anonymousRun);
    for (const name of ["whoAmI", "seedRecords", "getProgress", "createKeyringKeys", "listKeyringKeys"] as const) {
      expect(anonymous[name].code, name).toBe("UNAUTHENTICATED");
    }
    expect(anonymous.health[""]).toEqual({ code: "OK", status: "SERVING" });
  });
});
