import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyAlgorithm, KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { open, createMasterKeyring } from "../services/shared/crypto/envelope.js";
import { parseMasterKeys } from "../services/shared/crypto/master-keys.js";
import { userKeySealContext } from "../services/keys/user-keys.js";
import { openMessagesBackend, startMessagesHost, type Backend, type MessagesBackend, type MessagesHost } from "./support/messages-mesh.js";

const codeOf = async (p: Promise<unknown>): Promise<Code | "ok"> => {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
};

const text = (s: string) => new TextEncoder().encode(s);

describe.each<Backend>(["sqlite+memory", "mysql+redis"])("user keys and messages on %s", (backend) => {
  let be: MessagesBackend;
  let h: MessagesHost;
  const tag = randomBytes(3).toString("hex");
  const alice = `user:alice-${tag}`;
  const bob = `user:bob-${tag}`;
  const carol = `user:carol-${tag}`;
  const bobName = `bob-${tag}`;
  const aliceName = `alice-${tag}`;

  beforeAll(async () => {
    be = await openMessagesBackend(backend);
    h = await startMessagesHost(be);
    for (const p of [alice, bob]) await h.keysAs(p).createKeyPair({ purpose: KeyPurpose.MESSAGING });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await be?.close();
  });

  it("creates X25519 and Ed25519 key pairs, stores private keys only sealed, lists and switches the messaging key", async () => {
    const keys = h.keysAs(carol);
    const first = (await keys.createKeyPair({ purpose: KeyPurpose.MESSAGING })).keyPair!;
    expect(first.algorithm).toBe(KeyAlgorithm.X25519);
    expect(first.publicKey.length).toBe(32);
    expect(first.messagingDefault).toBe(true); // a user's first messaging key
    const signing = (await keys.createKeyPair({ purpose: KeyPurpose.SIGNING })).keyPair!;
    expect(signing.algorithm).toBe(KeyAlgorithm.ED25519);
    const second = (await keys.createKeyPair({ purpose: KeyPurpose.MESSAGING })).keyPair!;
    expect(second.messagingDefault).toBe(false);

    const listed = (await keys.listKeyPairs({})).keyPairs;
    expect(listed.map((k) => k.keyId)).toEqual([first.keyId, signing.keyId, second.keyId]);

    // At rest: only the sealed form, which opens with the master key and this row's context.
    const row = (await be.db.primary("user_key_pairs").where({ id: second.keyId }).first()) as { private_key_ciphertext: Uint8Array };
    const sealed = Buffer.from(row.private_key_ciphertext);
    expect(open(parseMasterKeys(be.masterKeys), sealed, userKeySealContext(second.keyId)).length).toBe(32);
    expect(await codeOf(Promise.resolve().then(() => open(createMasterKeyring(new Map([[1, randomBytes(32)]]), 1), sealed, userKeySealContext(second.keyId))))).not.toBe("ok");

    expect((await keys.setMessagingKey({ keyId: second.keyId })).keyPair!.messagingDefault).toBe(true);
    const pub = (await h.keysAs(alice).getPublicKey({ selector: { case: "username", value: `carol-${tag}` } })).keyPair!;
    expect(pub.keyId).toBe(second.keyId);
    expect(pub.publicKey).toEqual(second.publicKey);

    expect(await codeOf(keys.setMessagingKey({ keyId: signing.keyId }))).toBe(Code.InvalidArgument);
    // Someone else's key is not theirs to choose, and looks like no key at all.
    expect(await codeOf(h.keysAs(alice).setMessagingKey({ keyId: second.keyId }))).toBe(Code.NotFound);
    expect(await codeOf(keys.createKeyPair({ purpose: KeyPurpose.UNSPECIFIED }))).toBe(Code.InvalidArgument);
    expect(await codeOf(h.keysAs("anonymous").listKeyPairs({}))).toBe(Code.Unauthenticated);
  });

  it("keeps OpenSealedBox for services", async () => {
    const own = (await h.keysAs(bob).listKeyPairs({})).keyPairs[0]!;
    const call = h.keysAs(bob).openSealedBox({ ownerId: own.ownerId, keyId: own.keyId, encapsulatedKey: new Uint8Array(32), ciphertext: new Uint8Array(32) });
    expect(await codeOf(call)).toBe(Code.PermissionDenied);
  });

  it("sends both ways, lists, reads (marking read), filters unread and deletes", async () => {
    const sent = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: text("hello bob") })).message!;
    expect(sent.sender).toBe(aliceName);
    expect(sent.recipient).toBe(bobName);
    expect(sent.read).toBe(false);
    expect(sent.size).toBe(9);
    await h.messagesAs(bob).sendMessage({ recipient: aliceName, body: text("hi alice") });

    // The server stores ciphertext only.
    const stored = (await be.db.primary("messages").where({ id: sent.messageId }).first()) as { ciphertext: Uint8Array };
    expect(Buffer.from(stored.ciphertext).includes(Buffer.from("hello bob"))).toBe(false);

    const inbox = (await h.messagesAs(bob).listMessages({ unreadOnly: true })).messages;
    expect(inbox.map((m) => m.messageId)).toContain(sent.messageId);
    const read = await h.messagesAs(bob).readMessage({ messageId: sent.messageId });
    expect(new TextDecoder().decode(read.body)).toBe("hello bob");
    expect(read.message!.read).toBe(true);
    expect((await h.messagesAs(bob).listMessages({ unreadOnly: true })).messages.map((m) => m.messageId)).not.toContain(sent.messageId);
    expect((await h.messagesAs(bob).listMessages({})).messages.find((m) => m.messageId === sent.messageId)?.read).toBe(true);

    const aliceInbox = (await h.messagesAs(alice).listMessages({})).messages;
    expect(new TextDecoder().decode((await h.messagesAs(alice).readMessage({ messageId: aliceInbox[0]!.messageId })).body)).toBe("hi alice");

    await h.messagesAs(bob).deleteMessage({ messageId: sent.messageId });
    expect(await codeOf(h.messagesAs(bob).readMessage({ messageId: sent.messageId }))).toBe(Code.NotFound);
    expect(await codeOf(h.messagesAs(bob).deleteMessage({ messageId: sent.messageId }))).toBe(Code.NotFound);
  });

  it("pages the inbox newest first", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await h.messagesAs(alice).sendMessage({ recipient: bobName, body: text(`n${i}`) })).message!.messageId);
    const seen: string[] = [];
    let token = "";
    do {
      const page = await h.messagesAs(bob).listMessages({ pageSize: 2, pageToken: token });
      seen.push(...page.messages.map((m) => m.messageId));
      token = page.nextPageToken;
    } while (token !== "");
    const newest = seen.filter((id) => ids.includes(id));
    expect(newest).toEqual([...ids].reverse());
  });

  it("answers NotFound to anyone but the recipient", async () => {
    const m = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: text("for bob only") })).message!;
    expect(await codeOf(h.messagesAs(carol).readMessage({ messageId: m.messageId }))).toBe(Code.NotFound);
    expect(await codeOf(h.messagesAs(alice).readMessage({ messageId: m.messageId }))).toBe(Code.NotFound);
    expect(await codeOf(h.messagesAs(carol).deleteMessage({ messageId: m.messageId }))).toBe(Code.NotFound);
    expect((await h.messagesAs(carol).listMessages({})).messages.map((x) => x.messageId)).not.toContain(m.messageId);
    expect(await codeOf(h.messagesAs(bob).readMessage({ messageId: m.messageId }))).toBe("ok");
  });

  it("answers DataLoss for a tampered or swapped ciphertext, and leaves the message unread", async () => {
    const a = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: text("first") })).message!;
    const b = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: text("second") })).message!;
    const rows = (await be.db.primary("messages").whereIn("id", [a.messageId, b.messageId]).select("id", "enc", "ciphertext")) as {
      id: string;
      enc: Uint8Array;
      ciphertext: Uint8Array;
    }[];
    const ra = rows.find((r) => r.id === a.messageId)!;
    const rb = rows.find((r) => r.id === b.messageId)!;
    // Swap the two boxes: each is intact, but bound to the other message's id.
    await be.db.primary("messages").where({ id: a.messageId }).update({ enc: rb.enc, ciphertext: rb.ciphertext });
    await be.db.primary("messages").where({ id: b.messageId }).update({ enc: ra.enc, ciphertext: ra.ciphertext });
    expect(await codeOf(h.messagesAs(bob).readMessage({ messageId: a.messageId }))).toBe(Code.DataLoss);
    expect(await codeOf(h.messagesAs(bob).readMessage({ messageId: b.messageId }))).toBe(Code.DataLoss);
    // Put b's box back and flip one bit of it.
    const flipped = Buffer.from(rb.ciphertext);
    flipped[0]! ^= 0x01;
    await be.db.primary("messages").where({ id: b.messageId }).update({ enc: rb.enc, ciphertext: flipped });
    expect(await codeOf(h.messagesAs(bob).readMessage({ messageId: b.messageId }))).toBe(Code.DataLoss);
    const listed = (await h.messagesAs(bob).listMessages({ unreadOnly: true })).messages.map((m) => m.messageId);
    expect(listed).toEqual(expect.arrayContaining([a.messageId, b.messageId]));
  });

  it("refuses bad sends without storing anything", async () => {
    const before = Number(((await be.db.primary("messages").count({ n: "*" })) as { n: number }[])[0]!.n);
    expect(await codeOf(h.messagesAs(alice).sendMessage({ recipient: `nobody-${tag}`, body: text("x") }))).toBe(Code.NotFound);
    expect(await codeOf(h.messagesAs(alice).sendMessage({ recipient: bobName, body: new Uint8Array(64 * 1024 + 1) }))).toBe(Code.InvalidArgument);
    expect(await codeOf(h.messagesAs(alice).sendMessage({ recipient: bobName, body: new Uint8Array() }))).toBe(Code.InvalidArgument);
    expect(await codeOf(h.messagesAs(alice).sendMessage({ recipient: "NOT A NAME", body: text("x") }))).toBe(Code.InvalidArgument);
    expect(await codeOf(h.messagesAs(alice).readMessage({ messageId: "not-an-id" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(h.messagesAs("anonymous").sendMessage({ recipient: bobName, body: text("x") }))).toBe(Code.Unauthenticated);
    const after = Number(((await be.db.primary("messages").count({ n: "*" })) as { n: number }[])[0]!.n);
    expect(after).toBe(before);
    // The largest allowed body goes through.
    expect(await codeOf(h.messagesAs(alice).sendMessage({ recipient: bobName, body: randomBytes(64 * 1024) }))).toBe("ok");
  });

  it("streams new messages to a watcher on another process's coordinator", async () => {
    // A second host with its own coordinator: with Redis, the notice crosses through pub/sub.
    const other = backend === "mysql+redis" ? await startMessagesHost(be) : h;
    try {
      const ac = new AbortController();
      const stream = other.messagesAs(bob).watchMessages({}, { signal: ac.signal });
      const it = stream[Symbol.asyncIterator]();
      const first = it.next();
      await new Promise((r) => setTimeout(r, 300)); // let the subscription reach Redis
      const sent = (await h.messagesAs(alice).sendMessage({ recipient: bobName, body: text("live") })).message!;
      const got = await first;
      expect(got.done).toBe(false);
      expect(got.value!.message!.messageId).toBe(sent.messageId);
      expect(got.value!.message!.sender).toBe(aliceName);
      ac.abort();
    } finally {
      if (other !== h) await other.close();
    }
  });
});
