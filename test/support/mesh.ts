import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import pino from "pino";
import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { createCollectionHandler } from "../../services/collection/handler.js";
import { createLeaseCheck } from "../../services/collection/lease-check.js";
import { createCollectionStore } from "../../services/collection/store.js";
import { createExecutor } from "../../services/executor/executor.js";
import { createExecutorHandler } from "../../services/executor/handler.js";
import { createJobStore } from "../../services/executor/job-store.js";
import { createKeysHandler } from "../../services/keys/handler.js";
import { createKeyring } from "../../services/keys/keyring.js";
import { createKeyringStore } from "../../services/keys/keyring-store.js";
import { createSigningHandler } from "../../services/signing/handler.js";
import { createSigner } from "../../services/signing/signer.js";
import { createCoordinator } from "../../services/shared/coordination/index.js";
import type { Coordinator } from "../../services/shared/coordination/types.js";
import { createMasterKeyring } from "../../services/shared/crypto/envelope.js";
import { createDatabase, type Database } from "../../services/shared/storage/database.js";
import { registeredMigrations } from "../../services/migrations.js";
import { migrate } from "../../services/shared/storage/migrate.js";
import { createTracingInterceptor } from "../../services/shared/telemetry/interceptors.js";
import { createTestDatabase } from "./mysql.js";
import { deleteKeys, testRedisUrl, uniquePrefix } from "./redis.js";

/** Which storage and coordination a test mesh uses. */
export type Backend = "sqlite+memory" | "mysql+redis";

/** The signing services wired in one process through an in-memory router transport. */
export interface InProcessMesh {
  readonly db: Database;
  readonly coordinator: Coordinator;
  readonly keys: Client<typeof KeyManagementService>;
  readonly collection: Client<typeof CollectionService>;
  readonly signing: Client<typeof SigningService>;
  readonly executor: Client<typeof ExecutorService>;
  close(): Promise<void>;
}

/**
 * Builds keys, collection, signing and executor handlers on real storage (SQLite in a temp
 * dir, or a throwaway MariaDB database with Redis), routed through `createRouterTransport`
 * with the real tracing interceptor: the handler tier of the test pyramid.
 */
export async function startInProcessMesh(backend: Backend): Promise<InProcessMesh> {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-mesh-"));
  const mysql = backend === "mysql+redis" ? await createTestDatabase() : undefined;
  const db = createDatabase({ url: mysql?.url, dataDir: dir });
  await migrate(db, await registeredMigrations());
  const prefix = uniquePrefix("mesh");
  const coordinator = createCoordinator(backend === "mysql+redis" ? { redisUrl: testRedisUrl(), keyPrefix: prefix } : {});
  const ring = createMasterKeyring(new Map([[1, randomBytes(32)]]), 1);
  const shutdown = new AbortController();
  const keyringStore = createKeyringStore(db);
  const keyring = createKeyring({ store: keyringStore, coordinator, masterKeys: () => ring });
  const jobs = createJobStore(db);
  // Clients are created after the transport; handlers only use them at call time.
  const clients = {} as {
    keys: Client<typeof KeyManagementService>;
    collection: Client<typeof CollectionService>;
    signing: Client<typeof SigningService>;
    executor: Client<typeof ExecutorService>;
  };
  const transport = createRouterTransport(
    (router) => {
      router.service(KeyManagementService, createKeysHandler({ keyring, store: keyringStore, masterKeys: () => ring }));
      router.service(CollectionService, createCollectionHandler({
          store: createCollectionStore(db),
          leases: (keyId, fence, signal) => createLeaseCheck(clients.keys)(keyId, fence, signal),
        }),);
      const signer = createSigner({
        masterKeys: () => ring,
        source: async (keyId, fence) => {
          const res = await clients.keys.getWrappedSigningKey({ keyId, fence: BigInt(fence) });
          return { keyId: res.keyId, fence: Number(res.fence), wrapped: res.wrappedPrivateKey };
        },
      });
      router.service(
        SigningService,
        createSigningHandler({ signer, publicKeyOf: async (keyId) => (await clients.keys.getKeyringKey({ keyId })).key!.publicKey }),
      );
      const executor = createExecutor({
        get keys() {
          return clients.keys;
        },
        get collection() {
          return clients.collection;
        },
        get signing() {
          return clients.signing;
        },
        jobs,
        executorId: `test-${randomBytes(3).toString("hex")}`,
        logger: pino({ level: "silent" }),
      });
      router.service(ExecutorService, createExecutorHandler({ executor, jobs, collection: { getProgress: (...a) => clients.collection.getProgress(...a) } as Client<typeof CollectionService>, shutdown: shutdown.signal }));
    },
    { router: { interceptors: [createTracingInterceptor()] } },
  );
  clients.keys = createClient(KeyManagementService, transport);
  clients.collection = createClient(CollectionService, transport);
  clients.signing = createClient(SigningService, transport);
  clients.executor = createClient(ExecutorService, transport);
  return {
    db,
    coordinator,
    ...clients,
    async close() {
      shutdown.abort();
      await keyring.close();
      await coordinator.close();
      await db.close();
      if (backend === "mysql+redis") await deleteKeys(prefix);
      await mysql?.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
