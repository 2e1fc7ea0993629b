import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { VaultService } from "../../gen/keymesh/vault/v1/vault_service_pb.js";
import { createAuthModule } from "../../services/auth/module.js";
import { createUserStore } from "../../services/auth/user-store.js";
import { CALLER_HEADER } from "../../services/shared/interceptors/access.js";
import { vaultModule } from "../../services/vault/module.js";
import { loadConfig } from "../../services/shared/config.js";
import { createCoordinator } from "../../services/shared/coordination/index.js";
import type { Coordinator } from "../../services/shared/coordination/types.js";
import { startHost, type Host } from "../../services/shared/server/host.js";
import { createDatabase, type Database } from "../../services/shared/storage/database.js";
import { migrate } from "../../services/shared/storage/migrate.js";
import { collectMigrations } from "../../services/shared/storage/migrations/index.js";
import { createTestDatabase, type TestDatabase } from "./mysql.js";
import { deleteKeys, testRedisUrl, uniquePrefix } from "./redis.js";

/** Which backends a vault test runs on. */
export type VaultBackend = "sqlite" | "mysql";

/** A vault served over gRPC on a free port, with its own database and data directory. */
export interface VaultHost {
  readonly host: Host;
  readonly url: string;
  /** The same database the host uses (for inspecting and tampering with rows). */
  readonly db: Database;
  readonly dataDir: string;
  /**
   * A gRPC client acting as `principal`: "user:<name>" (a registered user's session),
   * "admin:<name>" (the same, granted the admin role), "admin:root" (the development root
   * token), "service:<name>" (the service token) or "anonymous" (no credentials).
   */
  client(principal: string): Client<typeof VaultService>;
  /** The bearer token `principal` calls with (registering and logging in on first use). */
  token(principal: string): Promise<string>;
  /** The id the vault records `principal` under ("user:<uuid>", "user:root", "service:<name>"). */
  principalId(principal: string): Promise<string>;
  /** Stops the host and, unless `keep`, removes its database and data directory. */
  close(keep?: boolean): Promise<void>;
}

/** Options for `startVaultHost`. */
export interface VaultHostOptions {
  readonly backend: VaultBackend;
  readonly env?: Record<string, string>;
  readonly logger?: Logger;
  /** Reuse a database and data directory from an earlier host (restarts). */
  readonly reuse?: { mysql?: TestDatabase; dataDir: string };
  /** Redis queues instead of in-process ones (unique key prefix, removed on close). */
  readonly redis?: boolean;
}

/** Starts the vault module in a real host. */
export async function startVaultHost(opts: VaultHostOptions): Promise<VaultHost & { mysql: TestDatabase | undefined }> {
  const dataDir = opts.reuse?.dataDir ?? mkdtempSync(join(tmpdir(), "keymesh-vault-"));
  const mysql = opts.backend === "mysql" ? (opts.reuse?.mysql ?? (await createTestDatabase())) : undefined;
  const db = createDatabase({ ...(mysql === undefined ? {} : { url: mysql.url }), dataDir });
  const services = [createAuthModule(), vaultModule];
  await migrate(db, collectMigrations(services));
  const prefix = uniquePrefix("vault");
  const coordinator: Coordinator = opts.redis === true ? createCoordinator({ redisUrl: testRedisUrl(), keyPrefix: prefix }) : createCoordinator();
  const rootToken = `kmr_${randomBytes(32).toString("base64url")}`;
  const serviceToken = `kms_${randomBytes(24).toString("base64url")}`;
  const config = loadConfig({ KEYMESH_SERVICE_TOKEN: serviceToken, KEYMESH_PORT: "0", KEYMESH_DATA_DIR: dataDir, KEYMESH_LOG_LEVEL: "silent", ...opts.env });
  const host = await startHost({
    services,
    config,
    resources: { db, coordinator },
    rootToken,
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
  });
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: host.url }));
  const users = createUserStore(db);
  // Real identities: each named user registers and logs in once; admins get the role the way
  // `keymesh admin grant` gives it.
  const sessions = new Map<string, Promise<{ token: string; id: string }>>();
  const session = (principal: string) => {
    let s = sessions.get(principal);
    if (s === undefined) {
      s = (async () => {
        const [kind, name = ""] = principal.split(":", 2);
        if (kind === "admin" && name === "root") return { token: rootToken, id: "user:root" };
        if (kind === "service") return { token: serviceToken, id: `service:${name}` };
        if (kind !== "user" && kind !== "admin") throw new Error(`no credentials for ${principal}`);
        // A fixed password per name: a restarted host over the same database logs the same users in.
        const password = `test-password-${name}`;
        if ((await users.byUsername(name)) === undefined) await auth.register({ username: name, password });
        if (kind === "admin") await users.setAdmin(name, true);
        const { token, userId } = await auth.login({ username: name, password });
        return { token, id: `user:${userId}` };
      })();
      sessions.set(principal, s);
    }
    return s;
  };
  const credentials = (principal: string): Interceptor => (next) => async (req) => {
    if (principal === "anonymous") return next(req);
    req.header.set("authorization", `Bearer ${(await session(principal)).token}`);
    if (principal.startsWith("service:")) req.header.set(CALLER_HEADER, principal.slice("service:".length));
    return next(req);
  };
  const clients = new Map<string, Client<typeof VaultService>>();
  return {
    host,
    url: host.url,
    db,
    dataDir,
    mysql,
    token: async (principal) => (await session(principal)).token,
    principalId: async (principal) => (await session(principal)).id,
    client(principal) {
      let c = clients.get(principal);
      if (c === undefined) {
        c = createClient(VaultService, createGrpcTransport({ baseUrl: host.url, interceptors: [credentials(principal)] }));
        clients.set(principal, c);
      }
      return c;
    },
    async close(keep = false) {
      await host.close();
      await coordinator.close();
      await db.close();
      if (opts.redis === true) await deleteKeys(prefix);
      if (!keep) {
        await mysql?.drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}
