import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { MessagesService } from "../../gen/keymesh/messages/v1/messages_service_pb.js";
import { authModule } from "../../services/auth/module.js";
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

/**
 * One host running auth, keys and messages on the backend. Tests name who they act as:
 * "user:<username>" (registered and logged in on first use, through AuthService), "admin:root"
 * (the host's root token, an admin) or "anonymous" (no credentials).
 */
export interface MessagesHost {
  readonly host: Host;
  /** An admin credential the host accepts (the development root token's role). */
  readonly rootToken: string;
  keysAs(principal: string): Client<typeof KeyManagementService>;
  messagesAs(principal: string): Client<typeof MessagesService>;
  close(): Promise<void>;
}

const PASSWORD = "a long enough test password";
/** Session tokens per database (users live there), shared by every host on it. */
const sessions = new WeakMap<object, Map<string, Promise<string>>>();

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
    services: [authModule, keysModule, messagesModule],
    config,
    resources: { db: backend.db, coordinator },
    rootToken,
  });
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: host.url }));
  let tokens = sessions.get(backend.db);
  if (tokens === undefined) sessions.set(backend.db, (tokens = new Map()));
  const known = tokens;
  const tokenOf = (principal: string): Promise<string | undefined> => {
    if (principal === "anonymous") return Promise.resolve(undefined);
    if (principal === "admin:root") return Promise.resolve(rootToken);
    const username = principal.replace(/^user:/, "");
    let token = known.get(username);
    if (token === undefined) {
      token = (async () => {
        await auth.register({ username, password: PASSWORD });
        return (await auth.login({ username, password: PASSWORD })).token;
      })();
      known.set(username, token);
    }
    return token;
  };
  const credentials = (principal: string): Interceptor => (next) => async (req) => {
    const token = await tokenOf(principal);
    if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = (principal: string) => createGrpcTransport({ baseUrl: host.url, interceptors: [credentials(principal)] });
  return {
    host,
    rootToken,
    keysAs: (p) => createClient(KeyManagementService, transport(p)),
    messagesAs: (p) => createClient(MessagesService, transport(p)),
    close: () => host.close(),
  };
}
