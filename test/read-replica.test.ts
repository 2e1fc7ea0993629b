import { mkdtempSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { VersionState } from "../gen/keymesh/vault/v1/vault_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { collectionModule } from "../services/collection/module.js";
import { loadConfig } from "../services/shared/config.js";
import { startHost, type Host } from "../services/shared/server/host.js";
import { vaultModule } from "../services/vault/module.js";
import { registeredMigrations } from "../services/migrations.js";
import { createMemoryCoordinator } from "../services/shared/coordination/index.js";
import { createDatabase, type Database } from "../services/shared/storage/database.js";
import { migrate } from "../services/shared/storage/migrate.js";
import { startReplicatedPair, type ReplicatedPair } from "./support/mariadb-replica.js";
import { startMessagesHost, type MessagesHost } from "./support/messages-mesh.js";

/**
 * KEYMESH_DATABASE_REPLICA_URL against a real MariaDB replica: read-only RPCs (public keys,
 * key listings, inbox listings, records, progress, signature exports, secret listings and
 * metadata) are served by the replica, writes only by the primary (the replica is reached as
 * a SELECT-only user, so a write sent there would fail), and while the replica lags, listings
 * are stale but reading a message you were told about is not. Which server answered shows
 * in what comes back while replication is stopped: the primary has the write, the replica not.
 */
describe("read replica", () => {
  let pair: ReplicatedPair;
  let db: Database;
  let h: MessagesHost;
  /** Collection and vault on the same database, called as an administrator. */
  let sv: Host;
  let collection: ReturnType<typeof createClient<typeof CollectionService>>;
  let vault: ReturnType<typeof createClient<typeof VaultService>>;
  let dataDir: string;
  const tag = randomBytes(3).toString("hex");
  const alice = `user:alice-${tag}`;
  const bob = `user:bob-${tag}`;
  const bobName = `bob-${tag}`;

  beforeAll(async () => {
    pair = await startReplicatedPair();
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-replica-"));
    db = createDatabase({ url: pair.primaryUrl, replicaUrl: pair.replicaUrl, dataDir });
    await migrate(db, await registeredMigrations());
    await pair.resumeAndCatchUp();
    h = await startMessagesHost({
      backend: "mysql+redis",
      db,
      dataDir,
      masterKeys: `1:${randomBytes(32).toString("base64")}`,
      prefix: "",
      coordinator: () => createMemoryCoordinator(),
      close: async () => undefined,
    });
    const rootToken = `kmr_${randomBytes(32).toString("base64url")}`;
    sv = await startHost({
      services: [collectionModule, vaultModule],
      config: loadConfig({
        KEYMESH_PORT: "0",
        KEYMESH_DATA_DIR: dataDir,
        KEYMESH_LOG_LEVEL: "silent",
        KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
        KEYMESH_SERVICE_TOKEN: `kms_${randomBytes(24).toString("base64url")}`,
      }),
      resources: { db, coordinator: createMemoryCoordinator() },
      rootToken,
    });
    const admin: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${rootToken}`);
      return next(req);
    };
    const transport = createGrpcTransport({ baseUrl: sv.url, interceptors: [admin] });
    collection = createClient(CollectionService, transport);
    vault = createClient(VaultService, transport);
  }, 120_000);

  afterAll(async () => {
    await sv?.close();
    await h?.close();
    await db?.close();
    await pair?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("cannot write through the replica connection", async () => {
    const err = await db.replica("messages").insert({ id: "x" }).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    // --read-only refuses it first (ER_OPTION_PREVENTS_STATEMENT); the SELECT-only grant would too.
    expect(err?.code).toMatch(/ER_OPTION_PREVENTS_STATEMENT|DENIED/);
  });

  it("serves listings and public keys from the replica; writes land on the primary", async () => {
    for (const p of [alice, bob]) await h.keysAs(p).createKeyPair({ purpose: KeyPurpose.MESSAGING });
    const m1 = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: new TextEncoder().encode("one") })).message!;
    await pair.resumeAndCatchUp();

    const before = await pair.replicaSelects();
    const inbox = (await h.messagesAs(bob).listMessages({})).messages;
    expect(inbox.map((m) => m.messageId)).toEqual([m1.messageId]);
    const bobKeys = (await h.keysAs(bob).listKeyPairs({})).keyPairs;
    expect(bobKeys.length).toBe(1);
    expect((await h.keysAs(alice).getPublicKey({ selector: { case: "username", value: bobName } })).keyPair!.keyId).toBe(bobKeys[0]!.keyId);
    expect(await pair.replicaSelects()).toBeGreaterThanOrEqual(before + 3);
  });

  it("while the replica lags: listings are stale, reading a message and its read mark are not", async () => {
    await pair.pause();
    try {
      const m2 = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: new TextEncoder().encode("two") })).message!;
      // The listing comes from the replica, which has not seen m2 yet.
      expect((await h.messagesAs(bob).listMessages({})).messages.map((m) => m.messageId)).not.toContain(m2.messageId);
      // Reading by id goes to the primary: the message opens at once and is marked read there.
      const read = await h.messagesAs(bob).readMessage({ messageId: m2.messageId });
      expect(new TextDecoder().decode(read.body)).toBe("two");
      // A key created during the lag is not visible to lookups yet.
      const carol = `user:carol-${tag}`;
      const key = (await h.keysAs(carol).createKeyPair({ purpose: KeyPurpose.MESSAGING })).keyPair!;
      const lookup = await h.keysAs(alice).getPublicKey({ selector: { case: "keyId", value: key.keyId } }).then(
        () => "ok",
        (e: unknown) => ConnectError.from(e).code,
      );
      expect(lookup).toBe(Code.NotFound);
      // ...yet the owner can make it their messaging key: that decision reads the primary.
      expect((await h.keysAs(carol).setMessagingKey({ keyId: key.keyId })).keyPair!.messagingDefault).toBe(true);

      await pair.resumeAndCatchUp();
      const listed = (await h.messagesAs(bob).listMessages({})).messages;
      expect(listed.find((m) => m.messageId === m2.messageId)?.read).toBe(true);
      expect((await h.keysAs(alice).getPublicKey({ selector: { case: "keyId", value: key.keyId } })).keyPair!.keyId).toBe(key.keyId);
    } finally {
      await pair.resumeAndCatchUp().catch(() => undefined);
    }
  });

  const codeOf = (p: Promise<unknown>) =>
    p.then(
      () => "ok",
      (e: unknown) => ConnectError.from(e).code,
    );
  const exported = async () => {
    let n = 0;
    for await (const chunk of collection.exportSignatures({})) n += chunk.records.length;
    return n;
  };

  it("serves records, progress and signature exports from the replica; seeding lands on the primary", async () => {
    const seeded = await collection.seedRecords({ count: 40 });
    expect(Number(seeded.inserted)).toBe(40);
    await pair.resumeAndCatchUp();
    const total = Number((await collection.getProgress({})).total);
    expect(total).toBeGreaterThanOrEqual(40);

    await pair.pause();
    try {
      // A write while replication is stopped lands on the primary...
      expect(Number((await collection.seedRecords({ count: 5 })).inserted)).toBe(5);
      const [{ n }] = (await db.primary("records").count({ n: "*" })) as [{ n: number | string }];
      expect(Number(n)).toBe(total + 5);
      // ...while every read still answers what the replica holds: it served them.
      const before = await pair.replicaSelects();
      expect(Number((await collection.getProgress({})).total)).toBe(total);
      expect(await exported()).toBe(total);
      expect((await collection.getRecord({ id: BigInt(total) })).record!.id).toBe(BigInt(total));
      expect(await codeOf(collection.getRecord({ id: BigInt(total + 1) }))).toBe(Code.NotFound);
      expect(await pair.replicaSelects()).toBeGreaterThanOrEqual(before + 4);
    } finally {
      await pair.resumeAndCatchUp();
    }
    expect(Number((await collection.getProgress({})).total)).toBe(total + 5);
    expect(await exported()).toBe(total + 5);
    expect((await collection.getRecord({ id: BigInt(total + 1) })).record!.id).toBe(BigInt(total + 1));
  });

  it("serves secret listings and metadata from the replica; access and values come from the primary", async () => {
    const bytes = (t: string) => new TextEncoder().encode(t);
    const a = (await vault.createSecret({ name: `replica/a-${tag}`, value: bytes("one") })).secret!;
    await pair.resumeAndCatchUp();
    const names = async () => (await vault.listSecrets({ namePrefix: "replica/" })).secrets.map((x) => x.name);
    const states = async (secretId: string) =>
      (await vault.getSecretMetadata({ selector: { case: "secretId", value: secretId } })).versions.map((v) => [v.version, v.state]);
    expect(await names()).toEqual([`replica/a-${tag}`]);

    await pair.pause();
    try {
      const b = (await vault.createSecret({ name: `replica/b-${tag}`, value: bytes("two") })).secret!;
      await vault.deleteSecretVersion({ secretId: a.secretId, version: 1 });
      const before = await pair.replicaSelects();
      // The listing and a version's state come from the replica, which has seen neither write.
      expect(await names()).toEqual([`replica/a-${tag}`]);
      expect(await states(a.secretId)).toEqual([[1, VersionState.ACTIVE]]);
      expect(await pair.replicaSelects()).toBeGreaterThanOrEqual(before + 2);
      // A secret created moments ago still describes itself with its version (the replica has
      // none of its versions, so they are read from the primary), and a value read is never
      // stale: the deleted version is refused at once.
      expect(await states(b.secretId)).toEqual([[1, VersionState.ACTIVE]]);
      expect(new TextDecoder().decode((await vault.getSecret({ selector: { case: "secretId", value: b.secretId } })).value)).toBe("two");
      expect(await codeOf(vault.getSecret({ selector: { case: "secretId", value: a.secretId }, version: 1 }))).toBe(Code.FailedPrecondition);
    } finally {
      await pair.resumeAndCatchUp();
    }
    expect(await names()).toEqual([`replica/a-${tag}`, `replica/b-${tag}`]);
    expect(await states(a.secretId)).toEqual([[1, VersionState.DELETED]]);
  });
});
