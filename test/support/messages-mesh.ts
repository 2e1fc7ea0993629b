import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { MessagesService } from "../../gen/keymesh/messages/v1/messages_service_pb.js";
import { keysModule } from "../../services/keys/module.js";
import { messagesModule } from "../../services/messages/module.js";
import { loadConfig } from "../../services/shared/config.js";
import { createCoordinator } from "../../services/shared/coordination/index.js";
import type { Coordinator } from "../../services/shared/coordination/types.js";
import { startHost, type Host } from "../../services/shared/server/host.js";
import { createDatabase, type Database } from "../../services/shared/storage/database.js";
import { migrate } from "../../services/shared/storage/migrate.js";
import { registeredMigrations } from "../../services/migrations.js";
import { createTestDatabase, type TestDatabase } from "./mysql.js";
import { deleteKeys, testRedisUrl, uniquePrefix } from "./redis.js";
import { asPrincipal, createTestPrincipalInterceptor } from "./test-principal.js";
import { bearer } from "./host.js";

export type Backend = "sqlite+memory" | "mysql+redis";

/** Shared storage for one or more keys+messages hosts (each host its own coordinator). */
export interface MessagesBackend {
  readonly backend: Backend;
  readonly db: Database;
  readonly dataDir: string;
  readonly masterKeys: string;
  readonly prefix: string;
  /** A coordinator of its own: Redis with the test prefix, or in-process. */
  coordinator(): Coordinator;
  close(): Promise<void>;
}

export async function openMessagesBackend(backend: Backend): Promise<MessagesBackend> {
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-msg-"));
  let mysql: TestDatabase | undefined;
  if (backend === "mysql+redis") mysql = await createTestDatabase();
  const db = createDatabase({ ...(mysql === undefined ? {} : { url: mysql.url }), dataDir });
  await migrate(db, await registeredMigrations());
  const prefix = uniquePrefix("msg");
  const coordinators: Coordinator[] = [];
  return {
    backend,
    db,
    dataDir,
    prefix,
    masterKeys: `1:${randomBytes(32).toString("base64")}`,
    coordinator() {
      const c = createCoordinator(backend === "mysql+redis" ? { redisUrl: testRedisUrl(), keyPrefix: prefix } : {});
      coordinators.push(c);
      return c;
    },
    async close() {
      for (const c of coordinators) await c.close();
      await db.close();
      if (backend === "mysql+redis") await deleteKeys(prefix);
      await mysql?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** One host running keys and messages on the backend, with test principals. */
export interface MessagesHost {
  readonly host: Host;
  /** An admin credential the host accepts (the development root token's role). */
  readonly rootToken: string;
  keysAs(principal: string): Client<typeof KeyManagementService>;
  messagesAs(principal: string): Client<typeof MessagesService>;
  close(): Promise<void>;
}

export async function startMessagesHost(backend: MessagesBackend, coordinator = backend.coordinator()): Promise<MessagesHost> {
  const rootToken = `kmr_${randomBytes(32).toString("base64url")}`;
  const serviceToken = `kms_${randomBytes(24).toString("base64url")}`;
  const config = loadConfig({
    KEYMESH_PORT: "0",
    KEYMESH_DATA_DIR: backend.dataDir,
    KEYMESH_LOG_LEVEL: "silent",
    KEYMESH_MASTER_KEYS: backend.masterKeys,
    KEYMESH_SERVICE_TOKEN: serviceToken,
  });
  const host = await startHost({
    services: [keysModule, messagesModule],
    config,
    resources: { db: backend.db, coordinator },
    rootToken,
    interceptors: [createTestPrincipalInterceptor()],
  });
  // The access policy sees an admin (the root token); the test principal, set inside it, then
  // stands for the user the test acts as.
  const transport = (principal: string) =>
    createGrpcTransport({ baseUrl: host.url, interceptors: [asPrincipal(principal), bearer(rootToken)] });
  return {
    host,
    rootToken,
    keysAs: (p) => createClient(KeyManagementService, transport(p)),
    messagesAs: (p) => createClient(MessagesService, transport(p)),
    close: () => host.close(),
  };
}
