import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { SigningService } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { collectionModule } from "../services/collection/module.js";
import { executorModule } from "../services/executor/module.js";
import { keysModule } from "../services/keys/module.js";
import { signingModule } from "../services/signing/module.js";
import { loadConfig } from "../services/shared/config.js";
import { createMasterKeyManager } from "../services/shared/crypto/rotation/master-key-manager.js";
import { startHost, type Host } from "../services/shared/server/host.js";
import { keysSealedSets } from "../services/keys/rewrap.js";
import { createRedisCoordinator } from "../services/shared/coordination/index.js";
import { open, sealedVersion } from "../services/shared/crypto/envelope.js";
import { parseMasterKeys } from "../services/shared/crypto/master-keys.js";
import { enqueueRewrapChunks, KEY_REWRAP_QUEUE } from "../services/shared/crypto/rotation/rewrap-chunks.js";
import { keyringSealContext } from "../services/keys/seal-context.js";
import { userKeySealContext } from "../services/keys/user-keys.js";
import { createDatabase, type Database } from "../services/shared/storage/database.js";
import { createLeaseTokens, hashLeaseId, newLeaseId } from "../services/shared/crypto/lease-token.js";
import { createSigner } from "../services/signing/signer.js";
import { createSignPool } from "../services/signing/sign-pool.js";
import { ed25519PublicKey, verifyEd25519 } from "../services/shared/crypto/ed25519.js";
import { migrate } from "../services/shared/storage/migrate.js";
import { registeredMigrations } from "../services/migrations.js";
import { createTestDatabase, type TestDatabase } from "./support/mysql.js";
import { startRedisNode, type RedisNode } from "./support/redis-nodes.js";
import { startMessagesHost, type MessagesBackend } from "./support/messages-mesh.js";
import { runJob, succeeded } from "./support/processes.js";

/**
 * Master-key rotation of private keys with three `keymesh worker rewrap` processes sharing a
 * Redis consumer group, one of them SIGKILLed while it holds a chunk: every private key ends
 * on the new version, the dead worker's chunk is claimed by another, and every message still
 * reads with the old master key gone. Meanwhile a signing job runs through the pipeline's
 * public RPCs (keys, signing, collection and executor in one host on the same database) and
 * finishes with every record signed once, each signature verifying; RetireMasterKey on the
 * keys service refuses while private keys use the old version and succeeds once none does.
 */

const BIN = fileURLToPath(new URL("../bin/keymesh.js", import.meta.url));
const k1 = randomBytes(32).toString("base64");
const k2 = randomBytes(32).toString("base64");
const USERS = 12;
const KEYRING_KEYS = 150;
/** Records of the signing job that runs during the rewrap: small batches, so it lasts. */
const RECORDS = 3000;
const JOB = { batchSize: 20, concurrency: 2, leaseTtlMs: 5000 };

/**
 * Keys, signing, collection and executor in one host on the test's database, as an
 * administrator would reach them. Its coordinator has a Redis prefix of its own, so its keys
 * service's rewrap worker does not join the three workers' consumer group.
 */
async function startSigningHost(db: Database, dataDir: string, redisUrl: string, masterKeys: string) {
  const rootToken = `kmr_${randomBytes(32).toString("base64url")}`;
  const config = loadConfig({
    KEYMESH_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_LOG_LEVEL: "silent",
    KEYMESH_MASTER_KEYS: masterKeys,
    KEYMESH_SERVICE_TOKEN: `kms_${randomBytes(24).toString("base64url")}`,
  });
  const coordinator = createRedisCoordinator({ urls: [redisUrl], keyPrefix: `signing-${randomBytes(3).toString("hex")}:` });
  const host: Host = await startHost({ services: [keysModule, signingModule, collectionModule, executorModule], config, resources: { db, coordinator }, rootToken });
  const admin: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${rootToken}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: host.url, interceptors: [admin] });
  return {
    keys: createClient(KeyManagementService, transport),
    signing: createClient(SigningService, transport),
    collection: createClient(CollectionService, transport),
    executor: createClient(ExecutorService, transport),
    async close() {
      await host.close();
      await coordinator.close();
    },
  };
}

interface Worker {
  readonly child: ChildProcess;
  out: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startWorker(env: Record<string, string>): Worker {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYMESH_") && !k.startsWith("OTEL_")));
  const child = spawn(process.execPath, [BIN, "worker", "rewrap"], { env: { ...base, OTEL_SDK_DISABLED: "true", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const w: Worker = {
    child,
    out: "",
    exited: new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.on("data", (d: Buffer) => (w.out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (w.out += d.toString()));
  return w;
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("private-key rewrap with three worker processes, one SIGKILLed", () => {
  let mysql: TestDatabase;
  let redis: RedisNode;
  let db: Database;
  let dataDir: string;
  const workers: Worker[] = [];
  const sent: { id: string; to: string; body: string }[] = [];

  const backend = (masterKeys: string): MessagesBackend => ({
    backend: "mysql+redis",
    db,
    dataDir,
    masterKeys,
    prefix: "keymesh:",
    coordinator: () => createRedisCoordinator({ urls: [redis.url] }),
    close: async () => undefined,
  });

  beforeAll(async () => {
    mysql = await createTestDatabase();
    redis = await startRedisNode();
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-rewrap-"));
    db = createDatabase({ url: mysql.url, dataDir });
    await migrate(db, await registeredMigrations());

    // Under master key 1: keyring keys, users' key pairs and messages between the users.
    const h = await startMessagesHost(backend(`1:${k1}`));
    try {
      await h.keysAs("admin:root").createKeyringKeys({ count: KEYRING_KEYS });
      const tag = randomBytes(3).toString("hex");
      const names = Array.from({ length: USERS }, (_, i) => `u${i}-${tag}`);
      for (const n of names) {
        await h.keysAs(`user:${n}`).createKeyPair({ purpose: KeyPurpose.MESSAGING });
        await h.keysAs(`user:${n}`).createKeyPair({ purpose: KeyPurpose.SIGNING });
      }
      for (let i = 0; i < names.length; i++) {
        const to = names[(i + 1) % names.length]!;
        const body = `from ${names[i]} to ${to}: ${randomBytes(8).toString("hex")}`;
        const m = (await h.messagesAs(`user:${names[i]}`).sendMessage({ recipient: to, body: new TextEncoder().encode(body) })).message!;
        sent.push({ id: m.messageId, to, body });
      }
    } finally {
      await h.close();
    }
  }, 120_000);

  afterAll(async () => {
    for (const w of workers) w.child.kill("SIGKILL");
    await db?.close();
    await redis?.kill();
    await mysql?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("moves every private key to the new version; the killed worker's chunk is claimed; every message still reads", async () => {
    const both = `1:${k1},2:${k2}`;
    const env = {
      KEYMESH_DATABASE_URL: mysql.url,
      KEYMESH_REDIS_URL: redis.url,
      KEYMESH_MASTER_KEYS: both,
      KEYMESH_DATA_DIR: dataDir,
      KEYMESH_REWRAP_CLAIM_IDLE_MS: "2000",
      KEYMESH_LOG_LEVEL: "info",
    };
    // The third worker dies (SIGKILL) after opening its second chunk, before writing it.
    workers.push(startWorker(env), startWorker(env), startWorker({ ...env, KEYMESH_FAILPOINTS: "rewrap.chunk.before-write=kill@2" }));
    await until("three workers running", () => workers.every((w) => w.out.includes("rewrap worker started")), 60_000);

    // Meanwhile, sign with every keyring key in turn the way the signing service does (a fresh
    // lease each time: the sealed key is fetched and opened anew), and verify each signature.
    const signing = { signatures: 0, failures: [] as string[], versions: new Set<number>(), stop: false };
    const ring = parseMasterKeys(both);
    const tokens = createLeaseTokens(() => ring);
    const pool = createSignPool({ threads: 1 });
    const signer = createSigner({
      pool,
      masterKeys: () => ring,
      tokens,
      // No cache of opened keys: every batch fetches its sealed key and opens it anew.
      maxCachedKeys: 0,
      source: async (keyId) => {
        const row = (await db.primary("keyring_keys").where({ id: keyId }).first("private_key_ciphertext")) as { private_key_ciphertext: Uint8Array };
        signing.versions.add(sealedVersion(row.private_key_ciphertext));
        return { keyId, wrapped: row.private_key_ciphertext };
      },
    });
    const leaseOf = (keyId: string, fence: bigint) => {
      const leaseId = newLeaseId();
      const leaseToken = tokens.mint({ keyId, fence, leaseHash: hashLeaseId(leaseId), expiresAt: Date.now() + 60_000 });
      return { keyId, fence, leaseId, leaseToken };
    };
    const ids = ((await db.primary("keyring_keys").select("id", "public_key").orderBy("id")) as { id: string; public_key: Uint8Array }[]).map((r) => ({
      id: r.id,
      pub: ed25519PublicKey(r.public_key),
    }));
    const signingLoop = (async () => {
      for (let fence = 1; !signing.stop; fence++) {
        const k = ids[fence % ids.length]!;
        const payload = randomBytes(32);
        try {
          const sig = await signer.signBatch(leaseOf(k.id, BigInt(fence)), [payload]);
          if (verifyEd25519(k.pub, payload, sig)) signing.signatures++;
          else signing.failures.push(`bad signature with ${k.id}`);
        } catch (err) {
          signing.failures.push(`${k.id}: ${String(err)}`);
        }
        // Leave the two cores to the job and the workers.
        await new Promise((r) => setTimeout(r, 5));
      }
    })();

    const sets = keysSealedSets(db);
    const total = KEYRING_KEYS + 2 * USERS;
    const pipeline = await startSigningHost(db, dataDir, redis.url, both);
    try {
      await pipeline.collection.seedRecords({ count: RECORDS });

      // Rotate the mesh-wide primary to version 2 (what RotateMasterKey does), without
      // queueing yet: the workers are idle and every private key is still on version 1.
      const manager = await createMasterKeyManager({ db, spec: both, dataDir });
      expect(await manager.rotate()).toEqual({ previous: 1, primary: 2 });
      const retire = () => pipeline.keys.retireMasterKey({ version: 1 }).then(() => undefined, (e: unknown) => ConnectError.from(e));
      // Once every process had time to pick up the new primary, version 1 still cannot retire:
      // the private keys on it are counted, and the message says what to do.
      await new Promise((r) => setTimeout(r, 5_200));
      const refused = await retire();
      expect(refused?.code).toBe(Code.FailedPrecondition);
      expect(refused?.rawMessage).toContain(`master key version 1 still encrypts ${total} private keys`);
      expect(refused?.rawMessage).toContain("RewrapPrivateKeys");

      // The signing job starts; the rewrap is queued while it runs.
      const job = runJob(pipeline.executor, { spec: JOB });
      const jobId = await job.jobId;
      await until("the job signing", async () => Number((await pipeline.collection.getProgress({})).signed) >= 200, 60_000);

      const coordinator = createRedisCoordinator({ urls: [redis.url] });
      let enqueued: { rows: number; chunks: number };
      try {
        enqueued = await enqueueRewrapChunks({ sets, queue: coordinator.queues.queue(KEY_REWRAP_QUEUE), primary: 2, chunkRows: 8 });
      } finally {
        await coordinator.close();
      }
      expect(enqueued.rows).toBe(total);
      const signedAtRewrapStart = Number((await pipeline.collection.getProgress({})).signed);
      // The job is mid-run as the rewrap starts: it signs while private keys move.
      expect(signedAtRewrapStart).toBeLessThan(RECORDS);

      const killed = await workers[2]!.exited;
      expect(killed.signal).toBe("SIGKILL");

      const onVersion = async (v: number) => {
        let n = 0;
        for (const set of sets) n += (await set.countByVersion()).get(v) ?? 0;
        return n;
      };
      await until("every private key on version 2", async () => (await onVersion(2)) === total, 60_000);
      expect(await onVersion(1)).toBe(0);

      // The job finishes: every record signed exactly once, each signature verifying.
      const ended = await job.done;
      expect(succeeded(ended), String(ended.error ?? ended.last?.error)).toBe(true);
      const progress = await pipeline.collection.getProgress({});
      expect([Number(progress.total), Number(progress.signed)]).toEqual([RECORDS, RECORDS]);
      expect(Number((await pipeline.collection.getBatchStats({ jobId })).duplicateSignatures)).toBe(0);
      const items = [];
      for await (const chunk of pipeline.collection.exportSignatures({})) {
        for (const r of chunk.records) {
          items.push({ recordId: r.record!.id, keyId: r.signature!.keyId, payload: r.record!.payload, signature: r.signature!.signature });
        }
      }
      expect(items.length).toBe(RECORDS);
      const verified = await pipeline.signing.verifyBatch({ items });
      expect([verified.valid, verified.invalidRecordIds]).toEqual([RECORDS, []]);

      // Version 1 holds no private key now: the keys service retires it.
      const status = await pipeline.keys.retireMasterKey({ version: 1 });
      expect(status.versions.map((v) => [v.version, v.primary, v.retired, Number(v.rowCount)])).toEqual([
        [1, false, true, 0],
        [2, true, false, total],
      ]);
    } finally {
      signing.stop = true;
      await pipeline.close();
    }
    await signingLoop;
    await pool.close();
    expect(signing.failures).toEqual([]);
    expect(signing.signatures).toBeGreaterThan(50);
    // It signed with keys still sealed under version 1 and with keys already moved to 2.
    expect([...signing.versions].sort()).toEqual([1, 2]);
    // A survivor redid the dead worker's chunk after the idle timeout.
    await until("a claimed chunk", () => workers.slice(0, 2).some((w) => /"redelivered":true/.test(w.out)), 10_000);
    for (const w of workers.slice(0, 2)) expect(w.child.exitCode).toBeNull();

    // Every private key opens with version 2 alone: nothing needs the old key any more.
    const onlyV2 = parseMasterKeys(`2:${k2}`);
    const keyring = (await db.primary("keyring_keys").select("id", "private_key_ciphertext")) as { id: string; private_key_ciphertext: Uint8Array }[];
    const users = (await db.primary("user_key_pairs").select("id", "private_key_ciphertext")) as { id: string; private_key_ciphertext: Uint8Array }[];
    expect(keyring.length + users.length).toBe(total);
    for (const r of keyring) {
      expect(sealedVersion(r.private_key_ciphertext)).toBe(2);
      expect(open(onlyV2, r.private_key_ciphertext, keyringSealContext(r.id)).length).toBeGreaterThan(0);
    }
    for (const r of users) expect(open(onlyV2, r.private_key_ciphertext, userKeySealContext(r.id)).length).toBe(32);

    // Every message still reads, through the services, with the old master key removed.
    const h = await startMessagesHost(backend(`2:${k2}`));
    try {
      for (const m of sent) {
        const res = await h.messagesAs(`user:${m.to}`).readMessage({ messageId: m.id });
        expect(new TextDecoder().decode(res.body)).toBe(m.body);
      }
    } finally {
      await h.close();
    }

    for (const w of workers.slice(0, 2)) w.child.kill("SIGTERM");
    for (const w of workers.slice(0, 2)) expect((await w.exited).code).toBe(0);
  }, 180_000);
});
