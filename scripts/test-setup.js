#!/usr/bin/env node
// Prepares this machine for `npm test`, which runs it first: checks the Debian packages some
// tests run (the Python gRPC client, the nginx gateway, Prometheus) and that MariaDB and Redis
// answer. As root it installs what is missing with apt-get and starts a backend that is down;
// otherwise it prints the exact commands to run and fails.
//
//   node scripts/test-setup.js          check, install, start (as root)
//   node scripts/test-setup.js --check  check only: never install or start anything
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

// ---------------------------------------------------------------------------------------------
// The Debian packages the tests need: one entry per package. `present` says whether the machine
// already has what the tests use; `usedBy` is shown when it is missing.
const DEBIAN_PACKAGES = [
  { name: "python3-grpcio", present: () => pythonImports("grpc", "google.protobuf"), usedBy: "test/python-client.test.ts" },
  { name: "protobuf-compiler", present: () => hasCommand("protoc"), usedBy: "test/python-client.test.ts" },
  { name: "protobuf-compiler-grpc", present: () => hasCommand("grpc_python_plugin"), usedBy: "test/python-client.test.ts" },
  { name: "nginx-light", present: () => hasCommand("nginx"), usedBy: "test/deploy-config.test.ts (gateway)" },
  { name: "prometheus", present: () => existsSync("/usr/bin/prometheus"), usedBy: "metrics scrape test" },
];

// The backends the integration tests talk to; `start` is run as root when one is down.
const BACKENDS = [
  {
    name: "MariaDB",
    port: 3306,
    start: ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"],
    waitSeconds: 60,
  },
  {
    name: "Redis",
    port: 6379,
    start: ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"],
    waitSeconds: 30,
  },
];
// ---------------------------------------------------------------------------------------------

const checkOnly = process.argv.includes("--check");
const isRoot = process.getuid?.() === 0;
const say = (line) => process.stdout.write(`test-setup: ${line}\n`);
const fail = (lines) => {
  for (const line of lines) process.stderr.write(`test-setup: ${line}\n`);
  process.exit(1);
};

/** Is `name` on PATH (or in the sbin folders a non-root PATH may lack)? */
function hasCommand(name) {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin"].filter(Boolean);
  return dirs.some((dir) => existsSync(join(dir, name)));
}

/** Can Debian's python3 (not a pyenv/venv one on PATH) import these modules? */
function pythonImports(...modules) {
  return spawnSync("/usr/bin/python3", ["-c", `import ${modules.join(", ")}`], { stdio: "ignore" }).status === 0;
}

function run(command, args, env = {}) {
  const res = spawnSync(command, args, { stdio: "inherit", env: { ...process.env, ...env } });
  return res.status === 0;
}

/** Does something accept TCP connections on 127.0.0.1:`port`? */
function listening(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.setTimeout(2_000);
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

async function ensurePackages() {
  const missing = DEBIAN_PACKAGES.filter((p) => !p.present());
  if (missing.length === 0) {
    say(`Debian packages present: ${DEBIAN_PACKAGES.map((p) => p.name).join(", ")}`);
    return;
  }
  const names = missing.map((p) => p.name);
  const install = `apt-get install -y ${names.join(" ")}`;
  if (checkOnly || !isRoot) {
    fail([
      `missing Debian packages: ${missing.map((p) => `${p.name} (${p.usedBy})`).join(", ")}`,
      `install them with: sudo apt-get update && sudo ${install}`,
      isRoot ? "(run without --check to install them)" : "(or run `npm test` as root, which installs them)",
    ]);
  }
  say(`installing ${names.join(", ")}`);
  // Waits for another apt/dpkg run to finish instead of failing on its lock.
  const lock = ["-o", "DPkg::Lock::Timeout=300"];
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  if (!run("apt-get", [...lock, "update", "-qq"], env)) fail(["apt-get update failed"]);
  if (!run("apt-get", [...lock, "install", "-y", "-qq", ...names], env)) fail([`${install} failed`]);
  const still = missing.filter((p) => !p.present());
  if (still.length > 0) fail([`still missing after installing: ${still.map((p) => p.name).join(", ")}`]);
}

async function ensureBackends() {
  for (const backend of BACKENDS) {
    if (await listening(backend.port)) {
      say(`${backend.name} answers on 127.0.0.1:${backend.port}`);
      continue;
    }
    const command = backend.start.map((a) => (a === "" ? '""' : a)).join(" ");
    if (checkOnly || !isRoot) {
      fail([`${backend.name} is not listening on 127.0.0.1:${backend.port}; start it, e.g.: sudo ${command}`]);
    }
    say(`${backend.name} is down; starting it: ${command}`);
    run(backend.start[0], backend.start.slice(1));
    let up = false;
    for (let i = 0; i < backend.waitSeconds && !up; i++) {
      up = await listening(backend.port);
      if (!up) await sleep(1_000);
    }
    if (!up) fail([`${backend.name} did not start within ${backend.waitSeconds} s`]);
    say(`${backend.name} started`);
  }
}

await ensurePackages();
await ensureBackends();
