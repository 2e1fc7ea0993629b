import { mkdtempSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { registeredMigrations } from "../services/migrations.js";
import { createMemoryCoordinator } from "../services/shared/coordination/index.js";
import { createDatabase, type Database } from "../services/shared/storage/database.js";
import { migrate } from "../services/shared/storage/migrate.js";
import { startReplicatedPair, type ReplicatedPair } from "./support/mariadb-replica.js";
import { startMessagesHost, type MessagesHost } from "./support/messages-mesh.js";

/**
 * KEYMESH_DATABASE_REPLICA_URL against a real MariaDB replica: read-only RPCs (public keys,
 * key listings, inbox listings) are served by the replica, writes only by the primary (the
 * replica is reached as a SELECT-only user, so a write sent there would fail), and while the
 * replica lags, listings are stale but reading a message you were told about is not.
 */
describe("read replica", () => {
  let pair: ReplicatedPair;
  let db: Database;
  let h: MessagesHost;
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
  }, 120_000);

  afterAll(async () => {
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
});
