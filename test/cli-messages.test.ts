import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openMessagesBackend, startMessagesHost, type MessagesBackend, type MessagesHost } from "./support/messages-mesh.js";
import { spawnKeymesh } from "./support/process.js";

/** `keymesh keys` and `keymesh messages` against a live host, as the root user. */
describe("keymesh keys and messages commands", () => {
  let be: MessagesBackend;
  let h: MessagesHost;

  beforeAll(async () => {
    be = await openMessagesBackend("sqlite+memory");
    h = await startMessagesHost(be);
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await be?.close();
  });

  const run = async (...args: string[]) => {
    const p = spawnKeymesh([...args, "--url", h.host.url, "--token", h.rootToken]);
    const { code } = await p.exited;
    return { code, out: p.stdout(), err: p.stderr() };
  };

  it("creates, lists and chooses keys, sends, lists, reads and deletes a message", async () => {
    const created = await run("keys", "create", "--json");
    expect(created.code, created.err).toBe(0);
    const key = JSON.parse(created.out) as { keyId: string; algorithm: string; messagingDefault: boolean };
    expect(key).toMatchObject({ algorithm: "x25519", messagingDefault: true });
    expect((await run("keys", "create", "--signing")).out).toContain("ed25519");
    const second = JSON.parse((await run("keys", "create", "--json")).out) as { keyId: string; messagingDefault: boolean };
    expect(second.messagingDefault).toBe(false);
    expect((await run("keys", "use", second.keyId)).out).toContain("(receives messages)");
    const listed = JSON.parse((await run("keys", "list", "--json")).out) as { keyId: string }[];
    expect(listed.map((k) => k.keyId)).toEqual(expect.arrayContaining([key.keyId, second.keyId]));

    const sent = await run("messages", "send", "root", "hello from the CLI");
    expect(sent.code, sent.err).toBe(0);
    const id = /sent (\S+) to root/.exec(sent.out)![1]!;
    expect((await run("messages", "inbox", "--unread")).out).toContain(`* ${id}`);
    const read = await run("messages", "read", id);
    expect(read.out).toContain("From: root");
    expect(read.out).toContain("hello from the CLI");
    expect((await run("messages", "inbox", "--unread")).out).toContain("no unread messages");
    expect((await run("messages", "delete", id)).code).toBe(0);

    const missing = await run("messages", "read", id);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("no message");
    const nobody = await run("messages", "send", "nobody-here", "x");
    expect(nobody.code).toBe(1);
    expect(nobody.err).toContain("messaging key");
    expect((await run("messages", "frobnicate")).code).toBe(2);
  }, 120_000);
});
