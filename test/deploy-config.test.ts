import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../gen/grpc/health/v1/health_pb.js";
import { GetProgressRequestSchema, GetProgressResponseSchema } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { loadServiceModule, SERVICE_NAMES, SERVICES, type ServiceName } from "../services/registry.js";
import { KNOWN_VARIABLES, loadConfig } from "../services/shared/config.js";
import { grpc, grpcClient, unary, unaryRaw } from "./support/grpc.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";
import { freePort } from "./support/redis-nodes.js";

/**
 * The deployable stack, checked without Docker or a cluster: docker-compose.yml, the Swarm
 * rendering, the Dockerfile, deploy/k8s (base and overlays) reference only services, images,
 * ports and variables that exist, carry no secret, and start in order without sleeps; the
 * container health check and the nginx gateway are exercised against live keymesh servers.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const at = (...parts: string[]) => join(ROOT, ...parts);
const read = (...parts: string[]) => readFileSync(at(...parts), "utf8");

/** A parsed YAML mapping; the tests check its shape. */
type Obj = Record<string, any>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

const PORT = 8080;
/** KEYMESH_METRICS_PORT in the deployments: Prometheus scrapes /metrics there. */
const METRICS_PORT = 9464;
const KNOWN = new Set(KNOWN_VARIABLES);
/** Services that decrypt under the master keys (and so must receive them). */
const MASTER_KEY_USERS: readonly ServiceName[] = ["keys", "signing", "messages", "vault"];
const OTEL_VARIABLES = new Set([
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_SERVICE_NAME",
  "OTEL_TRACES_SAMPLER",
  "OTEL_TRACES_SAMPLER_ARG",
  "OTEL_RESOURCE_ATTRIBUTES",
  "OTEL_METRICS_EXPORTER",
]);
const SECRET_VARIABLES = ["KEYMESH_MASTER_KEYS", "KEYMESH_SERVICE_TOKEN", "KEYMESH_DATABASE_URL", "KEYMESH_DATABASE_REPLICA_URL"];
/** Public images the stack may pull; anything else must be the project image. */
const PUBLIC_IMAGES = [
  /^mysql:8(\.\d+)*$/,
  /^redis:7(\.\d+)*(-alpine)?$/,
  /^jaegertracing\/all-in-one:\d+\.\d+\.\d+$/,
  /^nginx:\d+\.\d+(-alpine)?$/,
  /^prom\/prometheus:v\d+\.\d+\.\d+$/,
  /^grafana\/grafana:\d+\.\d+\.\d+$/,
];
const isProjectImage = (image: string) => /^(\$\{IMAGE:-keymesh:latest\}|keymesh|(.+\/)?keymesh(:[\w.-]+)?)$/.test(image);

function hasCommand(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } }).status === 0;
}

/** Every string in a parsed document, with its path. */
function* strings(value: unknown, path = ""): Generator<[string, string]> {
  if (typeof value === "string") yield [path, value];
  else if (Array.isArray(value)) for (const [i, v] of value.entries()) yield* strings(v, `${path}[${i}]`);
  else if (isObj(value)) for (const [k, v] of Object.entries(value)) yield* strings(v, path ? `${path}.${k}` : k);
}

/** Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}. */
function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}/g, (whole, name?: string, colon?: string, op?: string, arg?: string) => {
    if (whole === "$$") return "$";
    const v = env[name!];
    const missing = v === undefined || (colon === ":" && v === "");
    if (op === "-") return missing ? arg! : v!;
    if (op === "?" && missing) throw new Error(`required variable ${name} is not set: ${arg}`);
    return v ?? "";
  });
}

/** A compose variable reference such as ${MYSQL_PASSWORD:?...}. */
const isReference = (v: string) => /^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$/.test(v.trim());

/** Looks for values that look like key material or embedded credentials. */
function secretLiterals(text: string): string[] {
  const found: string[] = [];
  // 32 random bytes as base64 (44 characters, padded) or hex (64), or any long hex token.
  for (const m of text.matchAll(/(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])/g)) found.push(m[0]);
  for (const m of text.matchAll(/(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])/g)) found.push(m[0]);
  // Credentials inside URLs must be references (${...}) or documentation placeholders (<password>).
  for (const m of text.matchAll(/[a-z][a-z0-9+.-]*:\/\/[^/\s:@"']+:([^@\s"']+)@/g)) {
    if (!isReference(m[1]!) && !/^<[a-z-]+>$/.test(m[1]!)) found.push(m[0]);
  }
  return found;
}

/** Runs deploy/compose-env.sh and returns the variables it prints. */
function generatedComposeEnv(): Record<string, string> {
  const out = execFileSync("sh", [at("deploy/compose-env.sh")], { encoding: "utf8" });
  const env: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

/** Synthetic secrets of the right shape (never stored anywhere). */
function syntheticSecrets(): Record<string, string> {
  return {
    KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
    KEYMESH_SERVICE_TOKEN: randomBytes(24).toString("hex"),
    KEYMESH_DATABASE_URL: `mysql://keymesh:${randomBytes(12).toString("hex")}@mysql.example:3306/keymesh`,
  };
}

function listFiles(dir: string, suffixes: string[]): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path, suffixes));
    else if (suffixes.some((s) => entry.name.endsWith(s))) out.push(path);
  }
  return out.sort();
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml
// ---------------------------------------------------------------------------------------------

const composeText = read("docker-compose.yml");
const compose: Obj = parse(composeText, { merge: true, maxAliasCount: -1 });
const services: Record<string, Obj> = compose.services;

/** The environment of a compose service as a container would see it. */
function containerEnv(service: Obj, vars: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(service.environment ?? {})) env[k] = interpolate(String(v), vars);
  return env;
}

describe("docker-compose.yml", () => {
  it("runs each of the seven services in its own container of the project image", () => {
    for (const name of SERVICE_NAMES) {
      const s = services[name];
      expect(s, name).toBeDefined();
      expect(isProjectImage(s!.image), `${name}: ${s!.image}`).toBe(true);
      expect(s!.command.slice(0, 2), name).toEqual(["serve", name]);
      expect(s!.healthcheck.test, name).toEqual(["CMD", "node", "deploy/healthcheck.mjs"]);
      expect(s!.read_only, name).toBe(true);
    }
    expect(services.migrate!.command).toEqual(["migrate"]);
    expect(services.migrate!.restart).toBe("no");
  });

  it("uses only the project image and known public images", () => {
    for (const [name, s] of Object.entries(services)) {
      const image = String(s.image);
      expect(isProjectImage(image) || PUBLIC_IMAGES.some((re) => re.test(image)), `${name}: ${image}`).toBe(true);
    }
    const images = Object.values(services).map((s) => String(s.image));
    for (const re of PUBLIC_IMAGES) expect(images.some((i) => re.test(i)), String(re)).toBe(true);
  });

  it("sets only variables the code knows, with values its configuration accepts", async () => {
    const vars = generatedComposeEnv();
    for (const [name, s] of Object.entries(services)) {
      for (const key of Object.keys(s.environment ?? {})) {
        if (key.startsWith("KEYMESH_")) expect(KNOWN.has(key), `${name}: ${key} is not in KNOWN_VARIABLES`).toBe(true);
        if (key.startsWith("OTEL_")) expect(OTEL_VARIABLES.has(key), `${name}: ${key}`).toBe(true);
      }
    }
    for (const name of [...SERVICE_NAMES, "migrate"]) {
      const env = containerEnv(services[name]!, vars);
      const config = loadConfig(env); // throws ConfigError on any bad value
      expect(config.unknownVariables, name).toEqual([]);
      if (name === "migrate") {
        expect(config.databaseUrl).toMatch(/^mysql:\/\/keymesh:[0-9a-f]+@mysql:3306\/keymesh$/);
        continue;
      }
      const module = await loadServiceModule(name as ServiceName);
      expect(config.port, name).toBe(PORT);
      expect(config.host, name).toBe("0.0.0.0");
      expect(env.OTEL_SERVICE_NAME, name).toBe(`keymesh-${name}`);
      expect(env.OTEL_EXPORTER_OTLP_ENDPOINT, name).toBe("http://jaeger:4318");
      expect(config.serviceToken, name).toBe(vars.KEYMESH_SERVICE_TOKEN);
      for (const peer of SERVICE_NAMES) expect(config.serviceUrls[peer], `${name} → ${peer}`).toBe(`http://${peer}:${PORT}`);
      if (module.needs.database) expect(config.databaseUrl, name).toMatch(/^mysql:\/\/.+@mysql:3306\/keymesh$/);
      else expect(config.databaseUrl, name).toBeUndefined();
      expect(config.masterKeys !== undefined, `${name} master keys`).toBe(MASTER_KEY_USERS.includes(name as ServiceName));
    }
  });

  it("gives keys and executor all three Redis nodes as a Redlock quorum", () => {
    const vars = generatedComposeEnv();
    for (const name of ["keys", "executor"]) {
      const { redisUrls } = loadConfig(containerEnv(services[name]!, vars));
      expect(redisUrls, name).toEqual(["redis://redis-1:6379", "redis://redis-2:6379", "redis://redis-3:6379"]);
    }
    for (const node of ["redis-1", "redis-2", "redis-3"]) {
      expect(services[node]?.healthcheck?.test, node).toEqual(["CMD", "redis-cli", "ping"]);
    }
  });

  it("starts in dependency order through health conditions, never sleeps", () => {
    const allowed = new Set(["service_healthy", "service_completed_successfully", "service_started"]);
    for (const [name, s] of Object.entries(services)) {
      if (s.depends_on === undefined) continue;
      expect(isObj(s.depends_on), `${name}: depends_on must use conditions`).toBe(true);
      for (const [dep, spec] of Object.entries(s.depends_on as Obj)) {
        expect(services[dep], `${name} depends on unknown ${dep}`).toBeDefined();
        expect(allowed.has(spec.condition), `${name} → ${dep}: ${spec.condition}`).toBe(true);
        if (spec.condition === "service_healthy") {
          expect(services[dep]!.healthcheck?.test, `${dep} needs a health check`).toBeDefined();
          expect(services[dep]!.healthcheck?.disable, dep).not.toBe(true);
        }
        if (spec.condition === "service_completed_successfully") expect(dep).toBe("migrate");
      }
    }
    expect(services.migrate!.depends_on).toEqual({ mysql: { condition: "service_healthy" } });
    for (const name of SERVICE_NAMES) {
      expect(services.gateway!.depends_on[name], `gateway waits for ${name}`).toEqual({ condition: "service_healthy" });
    }
    for (const [name, s] of Object.entries(services)) {
      const commands = [s.command, s.entrypoint, s.healthcheck?.test].flat().filter((c) => c !== undefined).map(String);
      for (const c of commands) expect(c, `${name}: ${c}`).not.toMatch(/\bsleep\b/);
    }
  });

  it("has the database services wait for the migration and start without migrating again", async () => {
    for (const name of SERVICE_NAMES) {
      const { needs } = await loadServiceModule(name);
      const s = services[name]!;
      if (needs.database) {
        expect(s.depends_on?.migrate, name).toEqual({ condition: "service_completed_successfully" });
        expect(s.command, name).toContain("--no-migrate");
      }
    }
  });

  it("serves every keymesh service on 8080 (and metrics on 9464) inside the network; the gateway publishes :8080", () => {
    const vars = generatedComposeEnv();
    for (const name of SERVICE_NAMES) {
      const s = services[name]!;
      expect(s.ports, `${name} publishes no host port`).toBeUndefined();
      expect(s.container_name, `${name} has no fixed container name`).toBeUndefined();
      expect((s.expose ?? []).map(String), name).toEqual([String(PORT), String(METRICS_PORT)]);
      expect(loadConfig(containerEnv(s, vars)).metricsPort, name).toBe(METRICS_PORT);
    }
    expect(services.gateway!.ports).toEqual([`${PORT}:${PORT}`]);
    expect(services.jaeger!.ports).toEqual(["16686:16686"]);
    // Every URL pointing at a keymesh service uses its port.
    for (const [path, value] of strings(compose)) {
      for (const m of value.matchAll(/\/\/([a-z0-9-]+):(\d+)/g)) {
        if ((SERVICE_NAMES as readonly string[]).includes(m[1]!)) expect(Number(m[2]), path).toBe(PORT);
      }
    }
  });

  it("lets the executor scale: no container name, no host port, replicas from the environment", () => {
    const executor = services.executor!;
    expect(executor.container_name).toBeUndefined();
    expect(executor.ports).toBeUndefined();
    expect(executor.deploy.replicas).toBe("${EXECUTOR_REPLICAS:-1}");
    for (const name of SERVICE_NAMES) expect(services[name]!.deploy?.replicas, name).toMatch(/^\$\{[A-Z_]*REPLICAS:-1\}$/);
  });

  it("routes the gateway config from the repository and health-checks it", () => {
    const gateway = services.gateway!;
    expect(gateway.configs).toEqual([{ source: "gateway", target: "/etc/nginx/conf.d/default.conf" }]);
    expect(compose.configs.gateway.file).toBe("./deploy/nginx/keymesh.conf");
    expect(existsSync(at("deploy/nginx/keymesh.conf"))).toBe(true);
    expect(gateway.healthcheck.test.join(" ")).toContain("http://127.0.0.1:8081/healthz");
  });

  it("takes secrets only from variables, documented in compose.env.example and produced by compose-env.sh", () => {
    // Secret-looking literals anywhere.
    expect(secretLiterals(composeText)).toEqual([]);
    for (const [path, value] of strings(compose)) {
      const key = path.split(".").pop()!;
      if (/PASSWORD|TOKEN|SECRET|MASTER_KEYS/.test(key)) expect(isReference(value), `${path} must be a \${...} reference`).toBe(true);
    }
    // Every required variable is documented (empty) in the example and generated by the script.
    const required = [...new Set([...composeText.matchAll(/\$\{([A-Z0-9_]+):\?/g)].map((m) => m[1]!))].sort();
    expect(required).toEqual(["KEYMESH_MASTER_KEYS", "KEYMESH_SERVICE_TOKEN", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"]);
    const example = read("deploy/compose.env.example");
    expect(secretLiterals(example)).toEqual([]);
    for (const name of required) expect(example, name).toMatch(new RegExp(`^${name}=$`, "m"));
    const generated = generatedComposeEnv();
    for (const name of required) expect(generated[name], name).toMatch(/^\S{16,}$/);
    expect(loadConfig(generated).masterKeys).toBeDefined(); // a valid 32-byte key
    // Without them compose must refuse to start rather than run with development keys.
    expect(() => containerEnv(services.keys!, {})).toThrow(/KEYMESH_SERVICE_TOKEN|MYSQL_PASSWORD|KEYMESH_MASTER_KEYS/);
  });
});

describe("Prometheus and Grafana in docker-compose.yml", () => {
  it("scrapes every keymesh service on the metrics port, with a config promtool accepts", () => {
    const config: Obj = parse(read("deploy/prometheus/prometheus.yml"));
    const sd = config.scrape_configs[0].dns_sd_configs[0];
    expect([...sd.names].sort()).toEqual([...SERVICE_NAMES].sort());
    expect(sd.port).toBe(METRICS_PORT);
    expect(compose.configs.prometheus.file).toBe("./deploy/prometheus/prometheus.yml");
    expect(services.prometheus!.configs).toEqual([{ source: "prometheus", target: "/etc/prometheus/prometheus.yml" }]);
    const check = spawnSync("promtool", ["check", "config", at("deploy/prometheus/prometheus.yml")], {
      encoding: "utf8",
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/bin` },
    });
    if (check.error) throw new Error(`promtool (Debian package prometheus) is needed to check the config: ${check.error.message}`);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it("provisions Grafana with the dashboard and the Prometheus data source it refers to", () => {
    const grafana = services.grafana!;
    const mounted = new Map((grafana.configs as Obj[]).map((c) => [c.source as string, c.target as string]));
    for (const [source, target] of mounted) {
      expect(existsSync(at(compose.configs[source].file)), `${source}: ${compose.configs[source].file}`).toBe(true);
      expect(target, source).toMatch(/^\/(etc\/grafana\/provisioning|var\/lib\/grafana\/dashboards)\//);
    }
    expect(compose.configs["grafana-dashboard"].file).toBe("./deploy/grafana/keymesh.json");
    const datasources: Obj = parse(read("deploy/grafana/provisioning/datasources.yml"));
    const prometheus = datasources.datasources.find((d: Obj) => d.type === "prometheus");
    expect(prometheus.url).toBe("http://prometheus:9090");
    const providers: Obj = parse(read("deploy/grafana/provisioning/dashboards.yml"));
    expect(mounted.get("grafana-dashboard")).toBe(`${providers.providers[0].options.path}/keymesh.json`);
    const dashboard = JSON.parse(read("deploy/grafana/keymesh.json")) as { panels: { datasource: { uid: string }; targets: { datasource: { uid: string } }[] }[] };
    for (const panel of dashboard.panels) {
      expect(panel.datasource.uid).toBe(prometheus.uid);
      for (const t of panel.targets) expect(t.datasource.uid).toBe(prometheus.uid);
    }
  });
});

describe("Docker Swarm rendering (deploy/swarm/stack.mjs)", () => {
  const render = () => execFileSync(process.execPath, [at("deploy/swarm/stack.mjs")], { cwd: ROOT, encoding: "utf8" });

  it("keeps every service and drops what `docker stack` rejects", () => {
    const swarm: Obj = parse(render());
    expect(Object.keys(swarm.services).sort()).toEqual(Object.keys(services).sort());
    for (const [name, s] of Object.entries(swarm.services as Record<string, Obj>)) {
      for (const key of ["depends_on", "build", "restart", "container_name"]) expect(s[key], `${name}.${key}`).toBeUndefined();
      expect(s.command ?? [], name).not.toContain("--no-migrate");
    }
    expect(swarm.services.migrate.deploy).toMatchObject({ mode: "replicated-job", restart_policy: { condition: "on-failure" } });
    expect(Object.keys(swarm).filter((k) => k.startsWith("x-"))).toEqual([]);
  });

  it.skipIf(!hasCommand("docker"))("passes `docker stack config` (needs the docker CLI, not an engine)", () => {
    const res = spawnSync("docker", ["stack", "config", "-c", "-"], {
      cwd: ROOT,
      input: render(),
      encoding: "utf8",
      env: { ...process.env, ...generatedComposeEnv() },
    });
    expect(res.status, res.stderr).toBe(0);
    const resolved: Obj = parse(res.stdout);
    expect(resolved.services.executor.image).toBe("keymesh:latest");
    expect(resolved.services.executor.deploy.replicas).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore
// ---------------------------------------------------------------------------------------------

describe("Dockerfile", () => {
  const dockerfile = read("Dockerfile");
  const instructions = dockerfile
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  const lines = (op: string) => instructions.filter((l) => l.toUpperCase().startsWith(`${op} `));

  it("builds in stages on Node 20 and runs the CLI as a non-root user", () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:20-[\w-]*slim$/m);
    expect(lines("FROM").map((l) => l.split(/\s+/).slice(1).join(" "))).toEqual(["${NODE_IMAGE} AS deps", "${NODE_IMAGE} AS runtime"]);
    expect(dockerfile).toMatch(/apt-get install[^\n]*python3 make g\+\+/);
    expect(dockerfile).toContain("npm ci --omit=dev");
    expect(lines("USER")).toEqual(["USER 1000:1000"]);
    expect(lines("ENTRYPOINT")).toEqual(['ENTRYPOINT ["node", "bin/keymesh.js"]']);
    expect(lines("CMD")).toEqual(['CMD ["serve"]']);
    expect(lines("EXPOSE")).toEqual([`EXPOSE ${PORT}`]);
    expect(lines("HEALTHCHECK")[0]).toContain('CMD ["node", "deploy/healthcheck.mjs"]');
    const env = lines("ENV").join(" ");
    for (const m of env.matchAll(/\b(KEYMESH_[A-Z_]+)=/g)) expect(KNOWN.has(m[1]!), m[1]).toBe(true);
    expect(env).toContain("KEYMESH_HOST=0.0.0.0");
    expect(secretLiterals(dockerfile)).toEqual([]);
  });

  it("copies only what .dockerignore lets into the context, and that is everything the CLI imports", () => {
    const ignore = read(".dockerignore").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    expect(ignore[0]).toBe("**");
    const allowed = ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/$/, ""));
    const copied = lines("COPY")
      .filter((l) => !l.includes("--from="))
      .flatMap((l) => l.split(/\s+/).slice(1, -1));
    for (const src of copied) expect(allowed, src).toContain(src.replace(/\/$/, ""));
    for (const dir of ["bin", "cli", "services", "gen"]) expect(copied, dir).toContain(dir);
    for (const file of ["package.json", "package-lock.json", "tsconfig.json", "deploy/healthcheck.mjs"]) expect(copied, file).toContain(file);
    expect(ignore).toContain("**/*.test.ts");
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

const K8S = at("deploy/k8s");
const k8sFiles = listFiles(K8S, [".yaml", ".yml"]);
const k8sDocs: Array<{ file: string; doc: Obj }> = k8sFiles.flatMap((file) =>
  parseAllDocuments(readFileSync(file, "utf8")).map((d) => {
    if (d.errors.length > 0) throw new Error(`${relative(ROOT, file)}: ${d.errors[0]!.message}`);
    return { file: relative(K8S, file), doc: d.toJS() as Obj };
  }),
).filter(({ doc }) => doc !== null);
const ofKind = (kind: string, dir = "base/") => k8sDocs.filter(({ file, doc }) => doc.kind === kind && file.startsWith(dir)).map(({ doc }) => doc);
const kustomization = (dir: string): Obj => parse(readFileSync(join(K8S, dir, "kustomization.yaml"), "utf8"));
const literals = (k: Obj): Record<string, string> =>
  Object.fromEntries((k.configMapGenerator ?? []).flatMap((g: Obj) => (g.literals ?? []).map((l: string) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)])));

describe("deploy/k8s", () => {
  it("parses, and every kustomization references files that exist", () => {
    expect(k8sFiles.length).toBeGreaterThan(10);
    for (const dir of ["base", "overlays/dev", "overlays/prod"]) {
      const k = kustomization(dir);
      expect(k.kind, dir).toBe("Kustomization");
      const paths = [...(k.resources ?? []), ...(k.patches ?? []).filter((p: Obj) => p.path).map((p: Obj) => p.path)];
      for (const p of paths) expect(existsSync(resolve(K8S, dir, p)), `${dir}: ${p}`).toBe(true);
    }
    // Every manifest in base is listed by the base kustomization.
    const listed = new Set(kustomization("base").resources.map((r: string) => join("base", r)));
    for (const file of k8sFiles.map((f) => relative(K8S, f)).filter((f) => f.startsWith("base/") && !f.endsWith("kustomization.yaml"))) {
      expect(listed.has(file), `${file} is not in base/kustomization.yaml`).toBe(true);
    }
  });

  it("has one Deployment and one Service per keymesh service, on port 8080 named grpc", () => {
    const deployments = ofKind("Deployment");
    const svcs = ofKind("Service");
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual([...SERVICE_NAMES].sort());
    expect(svcs.map((s) => s.metadata.name).sort()).toEqual([...SERVICE_NAMES].sort());
    for (const name of SERVICE_NAMES) {
      const d = deployments.find((x) => x.metadata.name === name)!;
      const pod = d.spec.template.spec;
      const [c, ...others] = pod.containers as Obj[];
      expect(others, name).toEqual([]);
      expect(isProjectImage(c!.image), `${name}: ${c!.image}`).toBe(true);
      expect(c!.args.slice(0, 2), name).toEqual(["serve", name]);
      expect(c!.ports, name).toEqual([
        { name: "grpc", containerPort: PORT, protocol: "TCP" },
        { name: "metrics", containerPort: METRICS_PORT, protocol: "TCP" },
      ]);
      expect(d.spec.template.metadata.annotations, name).toEqual({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": String(METRICS_PORT),
        "prometheus.io/path": "/metrics",
      });
      for (const label of Object.entries(d.spec.selector.matchLabels)) expect(Object.entries(d.spec.template.metadata.labels)).toContainEqual(label);
      const svc = svcs.find((x) => x.metadata.name === name)!;
      expect(svc.spec.ports, name).toEqual([{ name: "grpc", port: PORT, targetPort: "grpc", protocol: "TCP", appProtocol: "kubernetes.io/h2c" }]);
      expect(svc.spec.selector, name).toEqual(d.spec.selector.matchLabels);
    }
  });

  it("probes with native gRPC health checks, limits resources and runs non-root on a read-only root", () => {
    for (const d of ofKind("Deployment")) {
      const name = d.metadata.name as ServiceName;
      const pod = d.spec.template.spec;
      const c = pod.containers[0];
      expect(c.startupProbe.grpc, name).toEqual({ port: PORT });
      expect(c.livenessProbe.grpc, name).toEqual({ port: PORT });
      expect(c.readinessProbe.grpc, name).toEqual({ port: PORT, service: SERVICES[name].desc.typeName });
      for (const kind of ["requests", "limits"]) {
        expect(c.resources[kind]?.cpu, `${name} ${kind}.cpu`).toBeDefined();
        expect(c.resources[kind]?.memory, `${name} ${kind}.memory`).toBeDefined();
      }
      expect(pod.securityContext.runAsNonRoot, name).toBe(true);
      expect(pod.securityContext.runAsUser, name).toBeGreaterThan(0);
      expect(c.securityContext, name).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      expect(c.volumeMounts, name).toContainEqual({ name: "tmp", mountPath: "/tmp" });
      expect(pod.automountServiceAccountToken, name).toBe(false);
    }
  });

  it("configures through a ConfigMap of known variables and secrets from External Secrets only", async () => {
    const base = kustomization("base");
    const config = literals(base);
    const targets = new Map(ofKind("ExternalSecret").map((es) => [es.spec.target.name as string, es]));
    for (const dir of ["base", "overlays/dev", "overlays/prod"]) {
      for (const key of Object.keys(literals(kustomization(dir)))) {
        if (key.startsWith("KEYMESH_")) expect(KNOWN.has(key), `${dir}: ${key}`).toBe(true);
        else expect(OTEL_VARIABLES.has(key), `${dir}: ${key}`).toBe(true);
        expect(SECRET_VARIABLES, `${dir}: ${key} is a secret`).not.toContain(key);
      }
    }
    for (const d of [...ofKind("Deployment"), ...ofKind("Job")]) {
      const name = d.metadata.name as string;
      const c = d.spec.template.spec.containers[0];
      for (const e of c.env ?? []) {
        if (e.name.startsWith("KEYMESH_")) expect(KNOWN.has(e.name), `${name}: ${e.name}`).toBe(true);
        expect(SECRET_VARIABLES, `${name}: ${e.name} set inline`).not.toContain(e.name);
      }
      const refs = (c.envFrom as Obj[]).map((r) => r.configMapRef?.name ?? r.secretRef?.name);
      expect(refs[0], name).toBe("keymesh-config");
      // The container sees the ConfigMap plus the synced secrets it references: a valid config.
      const env: Record<string, string> = { ...config };
      const synthetic = syntheticSecrets();
      for (const ref of refs.slice(1)) {
        const es = targets.get(ref);
        expect(es, `${name}: no ExternalSecret produces ${ref}`).toBeDefined();
        for (const item of es!.spec.data) env[item.secretKey] = synthetic[item.secretKey]!;
      }
      const loaded = loadConfig(env);
      expect(loaded.unknownVariables, name).toEqual([]);
      if (d.kind === "Job") {
        expect(c.args, name).toEqual(["migrate"]);
        expect(loaded.databaseUrl, name).toBeDefined();
        continue;
      }
      const service = name as ServiceName;
      const { needs } = await loadServiceModule(service);
      expect(loaded.databaseUrl !== undefined, `${name} database`).toBe(needs.database === true);
      expect(loaded.masterKeys !== undefined, `${name} master keys`).toBe(MASTER_KEY_USERS.includes(service));
      expect(loaded.serviceToken, `${name} service token`).toBeDefined();
      expect(loaded.port).toBe(PORT);
      expect(loaded.host).toBe("0.0.0.0");
      expect(loaded.redisUrls).toHaveLength(3);
      for (const peer of SERVICE_NAMES) expect(loaded.serviceUrls[peer]).toBe(`http://${peer}:${PORT}`);
    }
  });

  it("syncs the master keys, service token and database URL through ExternalSecrets from a ClusterSecretStore", () => {
    const synced = new Set<string>();
    for (const es of ofKind("ExternalSecret")) {
      expect(es.apiVersion).toBe("external-secrets.io/v1");
      expect(es.spec.secretStoreRef).toEqual({ kind: "ClusterSecretStore", name: "keymesh" });
      expect(es.spec.target.creationPolicy).toBe("Owner");
      for (const item of es.spec.data) {
        expect(KNOWN.has(item.secretKey), item.secretKey).toBe(true);
        expect(item.remoteRef.key).toMatch(/^keymesh\/ENVIRONMENT\/[a-z-]+$/);
        synced.add(item.secretKey);
      }
    }
    expect([...synced].sort()).toEqual(["KEYMESH_DATABASE_URL", "KEYMESH_MASTER_KEYS", "KEYMESH_SERVICE_TOKEN"]);
    // Each overlay points every ExternalSecret at its own environment's keys.
    for (const env of ["dev", "prod"]) {
      const patches = (kustomization(`overlays/${env}`).patches as Obj[]).filter((p) => p.target?.kind === "ExternalSecret");
      expect(patches.map((p) => p.target.name).sort()).toEqual(ofKind("ExternalSecret").map((es) => es.metadata.name).sort());
      for (const p of patches) expect(p.patch).toMatch(new RegExp(`value: keymesh/${env}/[a-z-]+`));
    }
    const store = k8sDocs.find(({ doc }) => doc.kind === "ClusterSecretStore")!.doc;
    expect(store.metadata.name).toBe("keymesh");
  });

  it("contains no Secret objects and no secret-looking values", () => {
    expect(k8sDocs.filter(({ doc }) => doc.kind === "Secret")).toEqual([]);
    for (const file of k8sFiles) expect(secretLiterals(readFileSync(file, "utf8")), relative(ROOT, file)).toEqual([]);
  });

  it("autoscales the executor, whose Deployment leaves replicas to the autoscaler", () => {
    const [hpa] = ofKind("HorizontalPodAutoscaler");
    expect(hpa!.apiVersion).toBe("autoscaling/v2");
    expect(hpa!.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "executor" });
    expect(hpa!.spec.minReplicas).toBeGreaterThanOrEqual(1);
    expect(hpa!.spec.maxReplicas).toBeGreaterThan(hpa!.spec.minReplicas);
    expect(ofKind("Deployment").find((d) => d.metadata.name === "executor")!.spec.replicas).toBeUndefined();
    for (const env of ["dev", "prod"]) {
      expect(kustomization(`overlays/${env}`).replicas.map((r: Obj) => r.name), env).not.toContain("executor");
    }
  });

  it("admits only the mesh's own pods and the gateway to every keymesh pod (NetworkPolicy)", () => {
    const policies = ofKind("NetworkPolicy");
    expect(policies).toHaveLength(1);
    const [policy] = policies;
    expect(policy!.spec.policyTypes).toEqual(["Ingress"]);
    const selector: Record<string, string> = policy!.spec.podSelector.matchLabels;
    // Every Deployment's pods are selected, so every one is isolated.
    for (const d of ofKind("Deployment")) {
      const labels: Record<string, string> = d.spec.template.metadata.labels;
      for (const [k, v] of Object.entries(selector)) expect(labels[k], `${d.metadata.name} ${k}`).toBe(v);
    }
    const rules: Obj[] = policy!.spec.ingress;
    expect(rules).toHaveLength(2);
    for (const rule of rules) {
      expect(rule.ports).toEqual([{ port: PORT, protocol: "TCP" }]);
      expect(rule.from).toHaveLength(1);
    }
    // From the mesh's pods in this namespace (no namespaceSelector), and from the gateway's pods.
    expect(rules[0]!.from[0]).toEqual({ podSelector: { matchLabels: selector } });
    expect(rules[1]!.from[0].namespaceSelector.matchLabels).toEqual({ "kubernetes.io/metadata.name": "ingress-nginx" });
    expect(rules[1]!.from[0].podSelector.matchLabels).toEqual({ "app.kubernetes.io/name": "ingress-nginx" });
    // No rule admits everyone (an empty `from` or an empty selector would).
    expect(JSON.stringify(rules)).not.toMatch(/"from":\[\]|"podSelector":\{\}|"namespaceSelector":\{\}|ipBlock/);
  });

  it("uses only the project image", () => {
    for (const { file, doc } of k8sDocs) {
      for (const [path, value] of strings(doc)) if (path.endsWith(".image")) expect(isProjectImage(value), `${file} ${path}: ${value}`).toBe(true);
    }
    for (const dir of ["base", "overlays/dev", "overlays/prod"]) {
      for (const img of kustomization(dir).images ?? []) {
        expect(img.name).toBe("keymesh");
        expect(isProjectImage(`${img.newName}:${img.newTag}`), dir).toBe(true);
      }
    }
  });

  it.skipIf(!hasCommand("kubectl"))("builds both overlays with kustomize (needs kubectl, no cluster)", () => {
    for (const env of ["dev", "prod"]) {
      const out = execFileSync("kubectl", ["kustomize", join(K8S, "overlays", env)], { encoding: "utf8" });
      const docs = parseAllDocuments(out).map((d) => d.toJS() as Obj);
      const namespace = env === "dev" ? "keymesh-dev" : "keymesh";
      expect(docs.filter((d) => d.kind === "Namespace").map((d) => d.metadata.name)).toEqual([namespace]);
      for (const d of docs.filter((x) => x.kind !== "Namespace")) expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe(namespace);
      const deployments = docs.filter((d) => d.kind === "Deployment");
      expect(deployments.map((d) => d.metadata.name).sort()).toEqual([...SERVICE_NAMES].sort());
      const configMap = docs.find((d) => d.kind === "ConfigMap")!;
      expect(configMap.metadata.name).toMatch(/^keymesh-config-[a-z0-9]+$/);
      for (const d of [...deployments, ...docs.filter((x) => x.kind === "Job")]) {
        const c = d.spec.template.spec.containers[0];
        expect(c.image, d.metadata.name).toMatch(/^registry\.example\.com\/keymesh:[\w.-]+$/);
        expect(c.envFrom[0].configMapRef.name, d.metadata.name).toBe(configMap.metadata.name);
      }
      expect(out).not.toContain("ENVIRONMENT");
      for (const es of docs.filter((d) => d.kind === "ExternalSecret")) {
        for (const item of es.spec.data) expect(item.remoteRef.key).toMatch(new RegExp(`^keymesh/${env}/`));
      }
      expect(secretLiterals(out)).toEqual([]);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Live: the container health check and the gateway
// ---------------------------------------------------------------------------------------------

const HEALTHCHECK = at("deploy/healthcheck.mjs");

function runHealthcheck(port: number, service?: string): { status: number | null; stdout: string; stderr: string } {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYMESH_")));
  const res = spawnSync(process.execPath, [HEALTHCHECK, ...(service === undefined ? [] : [service])], {
    env: { ...env, KEYMESH_PORT: String(port) },
    encoding: "utf8",
    timeout: 10_000,
  });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}


async function waitForPort(port: number, timeoutMs: number, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((done) => {
      const socket = tcpConnect(port, "127.0.0.1", () => {
        socket.destroy();
        done(true);
      });
      socket.once("error", () => done(false));
    });
    if (open) return;
    if (exited()) throw new Error("the process exited before listening");
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startServer(service: ServiceName, dataDirs: string[]): Promise<{ proc: KeymeshProcess; port: number; rootToken: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), `keymesh-deploy-${service}-`));
  dataDirs.push(dataDir);
  const proc = spawnKeymesh(["serve", service, "--port", "0", "--dev"], { KEYMESH_DATA_DIR: dataDir });
  const line = await proc.waitForLog((l) => l.msg === "keymesh serving");
  const rootToken = readFileSync(join(dataDir, "root-token"), "utf8").trim();
  return { proc, port: Number(String(line.address).split(":").pop()), rootToken };
}

async function stop(proc: KeymeshProcess): Promise<void> {
  if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGTERM");
  await proc.exited;
}

describe("live: deploy/healthcheck.mjs and the nginx gateway", () => {
  const dataDirs: string[] = [];
  let collection: { proc: KeymeshProcess; port: number; rootToken: string };
  let signing: { proc: KeymeshProcess; port: number; rootToken: string };
  let nginx: ChildProcess | undefined;
  let nginxDir: string | undefined;
  let gatewayPort = 0;
  let healthzPort = 0;
  let gateway: grpc.Client;

  beforeAll(async () => {
    [collection, signing] = await Promise.all([startServer("collection", dataDirs), startServer("signing", dataDirs)]);
  });

  afterAll(async () => {
    gateway?.close();
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((r) => nginx!.once("exit", r));
      nginx.kill("SIGTERM");
      await exited;
    }
    await Promise.all([collection && stop(collection.proc), signing && stop(signing.proc)]);
    for (const dir of [...dataDirs, ...(nginxDir ? [nginxDir] : [])]) rmSync(dir, { recursive: true, force: true });
  });

  it("the health check exits 0 for a SERVING server and for each service it runs", () => {
    const whole = runHealthcheck(collection.port);
    expect(whole.status, whole.stderr).toBe(0);
    expect(whole.stdout.trim()).toBe("server is SERVING");
    const one = runHealthcheck(collection.port, "keymesh.collection.v1.CollectionService");
    expect(one.status, one.stderr).toBe(0);
  });

  it("the health check fails for a service the server does not run", () => {
    const res = runHealthcheck(collection.port, "keymesh.vault.v1.VaultService");
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/unhealthy: gRPC status 5/);
  });

  describe("gateway (deploy/nginx/keymesh.conf)", () => {
    beforeAll(async () => {
      const bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p)) ?? (hasCommand("nginx") ? "nginx" : undefined);
      if (bin === undefined) throw new Error("nginx is not installed: apt-get install nginx-light (the gateway config is tested with it)");
      [gatewayPort, healthzPort] = await Promise.all([freePort(), freePort()]);
      nginxDir = mkdtempSync(join(tmpdir(), "keymesh-gateway-"));
      chmodSync(nginxDir, 0o755); // worker processes may run as nobody
      // The repository's config, pointed at the local servers: collection's upstream at the
      // collection server, every other upstream at the signing server.
      const conf = read("deploy/nginx/keymesh.conf")
        .replace(/server collection:8080;/g, `server 127.0.0.1:${collection.port};`)
        .replace(/server [a-z]+:8080;/g, `server 127.0.0.1:${signing.port};`)
        .replace(/listen 8080 http2;/, `listen 127.0.0.1:${gatewayPort} http2;`)
        .replace(/listen 8081;/, `listen 127.0.0.1:${healthzPort};`);
      expect(conf).not.toMatch(/server [a-z]+:8080/);
      writeFileSync(join(nginxDir, "keymesh.conf"), conf);
      const temp = (name: string) => `${name}_temp_path ${join(nginxDir!, name)};`;
      writeFileSync(
        join(nginxDir, "nginx.conf"),
        [
          "worker_processes 1;",
          `pid ${join(nginxDir, "nginx.pid")};`,
          `error_log ${join(nginxDir, "error.log")} warn;`,
          "events { worker_connections 128; }",
          "http {",
          `  access_log ${join(nginxDir, "access.log")};`,
          `  ${temp("client_body")} ${temp("proxy")} ${temp("fastcgi")} ${temp("uwsgi")} ${temp("scgi")}`,
          `  include ${join(nginxDir, "keymesh.conf")};`,
          "}",
        ].join("\n"),
      );
      const args = ["-p", nginxDir, "-e", join(nginxDir, "error.log"), "-c", join(nginxDir, "nginx.conf"), "-g", "daemon off;"];
      const check = spawnSync(bin, ["-t", ...args.slice(0, -2)], { encoding: "utf8" });
      expect(check.status, check.stderr).toBe(0);
      nginx = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      nginx.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
      await waitForPort(gatewayPort, 5_000, () => nginx!.exitCode !== null).catch((err: Error) => {
        throw new Error(`${err.message}\n${stderr}`);
      });
      gateway = grpcClient(`127.0.0.1:${gatewayPort}`);
    });

    const check = (service: string, backend?: string) => {
      const metadata = new grpc.Metadata();
      if (backend !== undefined) metadata.set("x-keymesh-service", backend);
      return unary(gateway, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, { service }, {}, metadata);
    };

    it("answers health checks through the gateway, routed by x-keymesh-service", async () => {
      expect((await check("")).status).toBe(Status.SERVING);
      expect((await check("keymesh.collection.v1.CollectionService", "collection")).status).toBe(Status.SERVING);
      expect((await check("keymesh.signing.v1.SigningService", "signing")).status).toBe(Status.SERVING);
      // Without the header the call reaches the default backend, which does not run collection.
      await expect(check("keymesh.collection.v1.CollectionService")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    });

    it("routes each RPC to its service by the path's service name", async () => {
      // Empty messages are valid protobuf for any request type; the point is who answers.
      const call = (path: string) => unaryRaw(gateway, path, Buffer.alloc(0)).then(() => grpc.status.OK, (err: grpc.ServiceError) => err.code);
      expect(await call("/keymesh.collection.v1.CollectionService/GetProgress")).not.toBe(grpc.status.UNIMPLEMENTED);
      expect(await call("/keymesh.signing.v1.SigningService/Verify")).not.toBe(grpc.status.UNIMPLEMENTED);
      // Vault's upstream is the signing server here: it must answer that it has no such service.
      expect(await call("/keymesh.vault.v1.VaultService/GetSecret")).toBe(grpc.status.UNIMPLEMENTED);
      const unknown = await unaryRaw(gateway, "/example.v1.Nothing/Here", Buffer.alloc(0)).catch((err: grpc.ServiceError) => err);
      expect(unknown).toMatchObject({ code: grpc.status.UNIMPLEMENTED, details: "unknown service" });
    });

    it("passes the authorization header through to the services", async () => {
      const progress = (token?: string) => {
        const metadata = new grpc.Metadata();
        if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
        return unary(gateway, "/keymesh.collection.v1.CollectionService/GetProgress", GetProgressRequestSchema, GetProgressResponseSchema, {}, {}, metadata);
      };
      expect(Number((await progress(collection.rootToken)).total)).toBe(0);
      await expect(progress()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      await expect(progress("kmt_forged")).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    });

    it("works with buf curl: reflection per backend and a gRPC call", () => {
      const buf = at("node_modules/.bin/buf");
      const url = `http://127.0.0.1:${gatewayPort}`;
      const list = (backend: string) =>
        execFileSync(buf, ["curl", "--http2-prior-knowledge", "--reflect-header", `x-keymesh-service: ${backend}`, "--list-services", url], {
          encoding: "utf8",
          timeout: 20_000,
        });
      expect(list("collection")).toContain("keymesh.collection.v1.CollectionService");
      expect(list("signing")).toContain("keymesh.signing.v1.SigningService");
      const health = execFileSync(buf, ["curl", "--http2-prior-knowledge", "--protocol", "grpc", `${url}/grpc.health.v1.Health/Check`], {
        encoding: "utf8",
        timeout: 20_000,
      });
      expect(JSON.parse(health)).toEqual({ status: "SERVING" });
    });

    it("serves its own liveness endpoint for the container health check", async () => {
      const res = await fetch(`http://127.0.0.1:${healthzPort}/healthz`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("ok\n");
    });
  });

  it("once the server is gone, the health check fails and the gateway reports UNAVAILABLE", async () => {
    await stop(collection.proc);
    const res = runHealthcheck(collection.port);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/unhealthy: .*ECONNREFUSED/);
    if (gateway !== undefined) {
      const err = await unaryRaw(gateway, "/keymesh.collection.v1.CollectionService/GetProgress", Buffer.alloc(0)).catch((e: grpc.ServiceError) => e);
      expect(err).toMatchObject({ code: grpc.status.UNAVAILABLE });
    }
  });
});

