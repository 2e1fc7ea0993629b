/**
 * `npm run bench:messages`: send and read throughput and latency percentiles of encrypted
 * messages with 16 concurrent users, printed as JSON. The auth, keys and messages services run
 * in one host process on MariaDB and Redis (every read goes messages → keys over gRPC, as in a
 * deployment); the users register, log in and call with their session tokens as gRPC clients
 * in this process.
 *
 *   npm run bench:messages                          # 16 users, 100 messages each, 1 KiB bodies
 *   npm run bench:messages -- --messages 20 --body-bytes 16384
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import knex from "knex";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { MessagesService } from "../gen/keymesh/messages/v1/messages_service_pb.js";
import { authModule } from "../services/auth/module.js";
import { keysModule } from "../services/keys/module.js";
import { messagesModule } from "../services/messages/module.js";
import { loadConfig } from "../services/shared/config.js";
import { startHost } from "../services/shared/server/host.js";
import { bearer } from "./mesh-processes.js";

const { values } = parseArgs({
  options: {
    users: { type: "string", default: "16" },
    messages: { type: "string", default: "100" },
    "body-bytes": { type: "string", default: "1024" },
    "mysql-url": { type: "string", default: process.env.KEYMESH_BENCH_MYSQL_URL ?? "mysql://root@127.0.0.1:3306" },
    "redis-url": { type: "string", default: process.env.KEYMESH_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379" },
  },
});
const USERS = Number(values.users);
const PER_USER = Number(values.messages);
const BODY = Number(values["body-bytes"]);
const DB_NAME = "keymesh_bench_messages";
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function summary(latencies: number[], wallMs: number) {
  const s = [...latencies].sort((a, b) => a - b);
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    count: s.length,
    perSecond: Math.round((s.length / wallMs) * 1000),
    p50Ms: round(percentile(s, 50)),
    p99Ms: round(percentile(s, 99)),
    maxMs: round(s[s.length - 1] ?? 0),
  };
}

async function timed<T>(latencies: number[], fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  const r = await fn();
  latencies.push(performance.now() - t);
  return r;
}

async function main(): Promise<void> {
  const admin = knex({ client: "mysql2", connection: values["mysql-url"] });
  await admin.raw(`DROP DATABASE IF EXISTS \`${DB_NAME}\``);
  await admin.raw(`CREATE DATABASE \`${DB_NAME}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-bench-msg-"));
  const config = loadConfig({
    KEYMESH_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_LOG_LEVEL: "warn",
    KEYMESH_DATABASE_URL: `${values["mysql-url"]}/${DB_NAME}`,
    KEYMESH_REDIS_URL: values["redis-url"],
    KEYMESH_MASTER_KEYS: `1:${randomBytes(32).toString("base64")}`,
    KEYMESH_SERVICE_TOKEN: randomBytes(24).toString("hex"),
  });
  const host = await startHost({ services: [authModule, keysModule, messagesModule], config });
  try {
    const tag = randomBytes(3).toString("hex");
    const names = Array.from({ length: USERS }, (_, i) => `bench${i}-${tag}`);
    const auth = createClient(AuthService, createGrpcTransport({ baseUrl: host.url }));
    const password = randomBytes(18).toString("base64url");
    const clientsOf = (token: string) => {
      const transport = createGrpcTransport({ baseUrl: host.url, interceptors: [bearer(token)] });
      return { keys: createClient(KeyManagementService, transport), messages: createClient(MessagesService, transport) };
    };
    const users: { name: string; keys: Client<typeof KeyManagementService>; messages: Client<typeof MessagesService> }[] = [];
    for (const name of names) {
      await auth.register({ username: name, password });
      users.push({ name, ...clientsOf((await auth.login({ username: name, password })).token) });
    }
    for (const u of users) await u.keys.createKeyPair({ purpose: KeyPurpose.MESSAGING });
    log(`${USERS} users with messaging keys; sending ${PER_USER} messages each of ${BODY} bytes`);

    const body = randomBytes(BODY);
    // Warm-up: connections, statement caches, JIT.
    await Promise.all(users.map((u, i) => u.messages.sendMessage({ recipient: names[(i + 1) % USERS]!, body })));

    const sendLat: number[] = [];
    let t0 = performance.now();
    await Promise.all(
      users.map(async (u, i) => {
        for (let n = 0; n < PER_USER; n++) {
          const to = names[(i + 1 + (n % (USERS - 1))) % USERS]!;
          await timed(sendLat, () => u.messages.sendMessage({ recipient: to, body }));
        }
      }),
    );
    const send = summary(sendLat, performance.now() - t0);
    log(`send: ${JSON.stringify(send)}`);

    const inboxes = await Promise.all(
      users.map(async (u) => {
        const ids: string[] = [];
        let pageToken = "";
        do {
          const page = await u.messages.listMessages({ pageSize: 500, pageToken });
          ids.push(...page.messages.map((m) => m.messageId));
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        return ids;
      }),
    );
    const readLat: number[] = [];
    t0 = performance.now();
    await Promise.all(
      users.map(async (u, i) => {
        for (const id of inboxes[i]!) {
          const res = await timed(readLat, () => u.messages.readMessage({ messageId: id }));
          if (res.body.length !== BODY) throw new Error(`message ${id} read back ${res.body.length} bytes, expected ${BODY}`);
        }
      }),
    );
    const read = summary(readLat, performance.now() - t0);
    log(`read: ${JSON.stringify(read)}`);

    const listLat: number[] = [];
    t0 = performance.now();
    await Promise.all(users.map(async (u) => { for (let n = 0; n < 20; n++) await timed(listLat, () => u.messages.listMessages({ pageSize: 50 })); }));
    const list = summary(listLat, performance.now() - t0);

    process.stdout.write(
      `${JSON.stringify(
        {
          bench: "messages",
          backend: "mariadb+redis; auth, keys and messages in one host process; clients over gRPC (h2c) with session tokens",
          users: USERS,
          messagesPerUser: PER_USER,
          bodyBytes: BODY,
          concurrency: USERS,
          send,
          read,
          listInbox: list,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    await host.close();
    await admin.raw(`DROP DATABASE IF EXISTS \`${DB_NAME}\``);
    await admin.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
