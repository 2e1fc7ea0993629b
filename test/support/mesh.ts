import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client, Transport } from "@connectrpc/connect";
import pino from "pino";
import type { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { ExecutorService } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import type { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { loadServiceModules } from "../../services/registry.js";
import { createPeerClients, peerClientTracing } from "../../services/shared/clients.js";
import { loadConfig } from "../../services/shared/config.js";
import { createCoordinator } from "../../services/shared/coordination/index.js";
import type { Coordinator } from "../../services/shared/coordination/types.js";
import { createRouteRecorder } from "../../services/shared/server/adapter.js";
import { createInMemoryTransport } from "../../services/shared/server/in-memory-transport.js";
import type { ServiceInstance } from "../../services/shared/server/service-module.js";
import { createDatabase, type Database } from "../../services/shared/storage/database.js";
import { registeredMigrations } from "../../services/migrations.js";
import { migrate } from "../../services/shared/storage/migrate.js";
import { createClientTracingInterceptor, createTracingInterceptor } from "../../services/shared/telemetry/interceptors.js";
import { createValidationInterceptor } from "../../services/shared/interceptors/validation.js";
import { createTestDatabase } from "./mysql.js";
import { deleteKeys, testRedisUrl, uniquePrefix } from "./redis.js";

/** Which storage and coordination a test mesh uses. */
export type Backend = "sqlite+memory" | "mysql+redis";

/** The signing services wired in one process through the in-memory transport. */
export interface InProcessMesh {
  readonly db: Database;
  readonly coordinator: Coordinator;
  readonly keys: Client<typeof KeyManagementService>;
  readonly collection: Client<typeof CollectionService>;
  readonly signing: Client<typeof SigningService>;
  readonly executor: Client<typeof ExecutorService>;
  close(): Promise<void>;
}

/** The services the signing pipeline needs. */
const SIGNING_MESH = ["keys", "signing", "collection", "executor"] as const;

/**
 * Runs the keys, signing, collection and executor modules, registered exactly as the host
 * registers them, on real storage (SQLite in a temp dir, or a throwaway MariaDB database
 * with Redis), routed through the in-memory transport with the real tracing interceptors: the
 * handler tier of the test pyramid. Peers reach each other through the same transport.
 */
export async function startInProcessMesh(backend: Backend): Promise<InProcessMesh> {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-mesh-"));
  const mysql = backend === "mysql+redis" ? await createTestDatabase() : undefined;
  const db = createDatabase({ url: mysql?.url, dataDir: dir });
  await migrate(db, await registeredMigrations());
  const prefix = uniquePrefix("mesh");
  const coordinator = createCoordinator(backend === "mysql+redis" ? { redisUrl: testRedisUrl(), keyPrefix: prefix } : {});
  const config = loadConfig({
    KEYMESH_DATA_DIR: dir,
    KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
    KEYMESH_LOG_LEVEL: "silent",
  });
  const shutdown = new AbortController();
  const recorder = createRouteRecorder();
  // Modules take their peers' clients while registering, before the router exists.
  let router: Transport | undefined;
  const transport: Transport = {
    unary: (...args) => router!.unary(...args),
    stream: (...args) => router!.stream(...args),
  };
  const clients = createPeerClients(config, { transport });
  const instances: ServiceInstance[] = [];
  for (const module of await loadServiceModules(SIGNING_MESH)) {
    const ctx = { config, logger: pino({ level: "silent" }), db, coordinator, clients, shutdown: shutdown.signal };
    const instance = await module.register(recorder.router, ctx);
    if (instance) instances.push(instance);
  }
  // Client and server tracing as between processes (peers trace their calls as clients.ts does).
  router = createInMemoryTransport(recorder.routes, {
    router: { interceptors: [createTracingInterceptor(), createValidationInterceptor()] },
    clientInterceptors: [createClientTracingInterceptor(peerClientTracing)],
  });
  return {
    db,
    coordinator,
    keys: clients.keys,
    collection: clients.collection,
    signing: clients.signing,
    executor: clients.executor,
    async close() {
      shutdown.abort();
      for (const instance of instances.reverse()) await instance.close?.();
      clients.close();
      await coordinator.close();
      await db.close();
      if (backend === "mysql+redis") await deleteKeys(prefix);
      await mysql?.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
