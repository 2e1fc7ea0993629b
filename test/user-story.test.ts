import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { MessagesService } from "../gen/keymesh/messages/v1/messages_service_pb.js";
import { createTestDatabase, type TestDatabase } from "./support/mysql.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";
import { createProcessGroup, type MeshProcess, type ProcessGroup } from "./support/processes.js";
import { startRedisNode, type RedisNode } from "./support/redis-nodes.js";

/**
 * The whole story through generated clients, across processes: two users register and log
 * in, create their keys, and write to each other through two different `keymesh serve` processes
 * sharing MariaDB and Redis, while `keymesh messages watch` in a third process streams the
 * recipient's new messages live.
 */
const PASSWORD = "correct horse battery staple";

const bearer = (token: string): Interceptor => (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

describe("user story: register, keys, messages both ways, live watch in another process", () => {
  let mysql: TestDatabase;
  let redis: RedisNode;
  let group: ProcessGroup;
  let a: MeshProcess;
  let b: MeshProcess;
  let dataDir: string;
  let watcher: KeymeshProcess | undefined;

  beforeAll(async () => {
    mysql = await createTestDatabase();
    redis = await startRedisNode();
    dataDir = mkdtempSync(join(tmpdir(), "keymesh-story-"));
    const env = {
      KEYMESH_DATABASE_URL: mysql.url,
      KEYMESH_REDIS_URL: redis.url,
      KEYMESH_SERVICE_TOKEN: `kms_${randomBytes(24).toString("base64url")}`,
      KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
      KEYMESH_DATA_DIR: dataDir,
    };
    group = createProcessGroup();
    a = await group.start({ name: "mesh-a", services: ["auth", "keys", "messages"], env }, 60_000);
    b = await group.start({ name: "mesh-b", services: ["auth", "keys", "messages"], env }, 60_000);
  }, 120_000);

  afterAll(async () => {
    watcher?.child.kill("SIGKILL");
    await group?.close();
    await redis?.kill();
    await mysql?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const clients = (url: string, token: string) => {
    const t = createGrpcTransport({ baseUrl: url, interceptors: [bearer(token)] });
    return { keys: createClient(KeyManagementService, t), messages: createClient(MessagesService, t) };
  };

  it("works end to end", async () => {
    const auth: Client<typeof AuthService> = createClient(AuthService, createGrpcTransport({ baseUrl: a.url }));
    const tag = randomBytes(3).toString("hex");
    const [alice, bob] = [`alice-${tag}`, `bob-${tag}`];
    for (const username of [alice, bob]) await auth.register({ username, password: PASSWORD });
    const aliceToken = (await auth.login({ username: alice, password: PASSWORD })).token;
    const bobToken = (await auth.login({ username: bob, password: PASSWORD })).token;

    // Alice works through process A, Bob through process B.
    const aliceA = clients(a.url, aliceToken);
    const bobB = clients(b.url, bobToken);
    await aliceA.keys.createKeyPair({ purpose: KeyPurpose.MESSAGING });
    await bobB.keys.createKeyPair({ purpose: KeyPurpose.MESSAGING });
    expect((await aliceA.keys.getPublicKey({ selector: { case: "username", value: bob } })).keyPair!.publicKey.length).toBe(32);

    // Bob watches in another process, connected to B.
    watcher = spawnKeymesh(["messages", "watch", "--json", "--url", b.url, "--token", bobToken]);
    const deadline = Date.now() + 30_000;
    while (!watcher.stderr().includes("watching")) {
      if (Date.now() > deadline || watcher.child.exitCode !== null) throw new Error(`watch did not start: ${watcher.stderr()}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    // Alice writes through A until the watcher (subscribed through B, notified over Redis) shows it.
    const sentIds: string[] = [];
    let seen: { messageId: string; sender: string } | undefined;
    for (let attempt = 0; seen === undefined && attempt < 20; attempt++) {
      const m = (await aliceA.messages.sendMessage({ recipient: bob, body: new TextEncoder().encode(`hello bob #${attempt}`) })).message!;
      sentIds.push(m.messageId);
      const until = Date.now() + 1_500;
      while (seen === undefined && Date.now() < until) {
        seen = watcher
          .stdout()
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as { messageId: string; sender: string })
          .find((n) => sentIds.includes(n.messageId));
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    expect(seen?.sender).toBe(alice);

    const read = await bobB.messages.readMessage({ messageId: seen!.messageId });
    expect(new TextDecoder().decode(read.body)).toMatch(/^hello bob #\d+$/);

    const reply = (await bobB.messages.sendMessage({ recipient: alice, body: new TextEncoder().encode("hi alice") })).message!;
    expect(new TextDecoder().decode((await aliceA.messages.readMessage({ messageId: reply.messageId })).body)).toBe("hi alice");

    // Nobody but the recipient reads a message.
    const stolen = await aliceA.messages.readMessage({ messageId: seen!.messageId }).then(
      () => "ok",
      (e: unknown) => ConnectError.from(e).code,
    );
    expect(stolen).toBe(Code.NotFound);
    // No credentials at all: Unauthenticated.
    const anon = createClient(MessagesService, createGrpcTransport({ baseUrl: b.url }));
    expect(await anon.listMessages({}).then(() => "ok", (e: unknown) => ConnectError.from(e).code)).toBe(Code.Unauthenticated);

    watcher.child.kill("SIGINT");
    expect((await watcher.exited).code).toBe(130);
  }, 120_000);
});
