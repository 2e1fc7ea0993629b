import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { VaultService } from "../../gen/keymesh/vault/v1/vault_service_pb.js";
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
import { asPrincipal, createTestPrincipalInterceptor } from "./test-principal.js";

/** Which backends a vault test runs on. */
export type VaultBackend = "sqlite" | "mysql";

/** A vault served over gRPC on a free port, with its own database and data directory. */
export interface VaultHost {
  readonly host: Host;
  readonly url: string;
  /** The same database the host uses (for inspecting and tampering with rows). */
  readonly db: Database;
  readonly dataDir: string;
  /** A gRPC client acting as `principal` ("user:alice", "admin:root", ...). */
  client(principal: string): Client<typeof VaultService>;
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
  await migrate(db, collectMigrations([vaultModule]));
  const prefix = uniquePrefix("vault");
  const coordinator: Coordinator = opts.redis === true ? createCoordinator({ redisUrl: testRedisUrl(), keyPrefix: prefix }) : createCoordinator();
  const config = loadConfig({ KEYMESH_PORT: "0", KEYMESH_DATA_DIR: dataDir, KEYMESH_LOG_LEVEL: "silent", ...opts.env });
  const host = await startHost({
    services: [vaultModule],
    config,
    resources: { db, coordinator },
    interceptors: [createTestPrincipalInterceptor()],
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
  });
  const clients = new Map<string, Client<typeof VaultService>>();
  return {
    host,
    url: host.url,
    db,
    dataDir,
    mysql,
    client(principal) {
      let c = clients.get(principal);
      if (c === undefined) {
        c = createClient(VaultService, createGrpcTransport({ baseUrl: host.url, interceptors: [asPrincipal(principal)] }));
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
