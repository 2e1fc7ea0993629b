import { createHash } from "node:crypto";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import knex from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService, PrincipalKind } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { createAuthModule } from "../services/auth/module.js";
import { bearer, startTestHost, type TestHost } from "./support/host.js";
import { createTestDatabase, type TestDatabase } from "./support/mysql.js";
import { placeholderModules } from "./support/placeholders.js";
import { spawnKeymesh } from "./support/process.js";
import { deleteKeys, testRedisUrl, uniquePrefix } from "./support/redis.js";

const PASSWORD = "a-long-enough-password";
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

describe.each(["sqlite+memory", "mysql+redis"] as const)("AuthService on %s", (backend) => {
  let server: TestHost;
  let mysql: TestDatabase | undefined;
  let prefix: string;
  let auth: Client<typeof AuthService>;
  let keysAs: (token: string) => Client<typeof KeyManagementService>;
  let sessionsTable: () => Promise<{ token_hash: string }[]>;
  let usersTable: () => Promise<{ username: string; password_hash: string }[]>;
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    prefix = uniquePrefix("auth");
    mysql = backend === "mysql+redis" ? await createTestDatabase() : undefined;
    const env: Record<string, string> = mysql
      ? { KEYMESH_DATABASE_URL: mysql.url, KEYMESH_REDIS_URL: testRedisUrl(), KEYMESH_REDIS_PREFIX: prefix }
      : {};
    // Tight limits so the test reaches them quickly; the defaults are exercised across processes.
    const module = createAuthModule({ limits: { username: { maxFailures: 3, windowMs: 60_000 }, peer: { maxFailures: 50, windowMs: 60_000 } } });
    server = await startTestHost({ services: [module, ...placeholderModules(["keys"])], env });
    auth = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
    keysAs = (token) => createClient(KeyManagementService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
    const url = mysql?.url;
    if (url !== undefined) {
      const db = knex({ client: "mysql2", connection: url });
      closers.push(() => db.destroy());
      sessionsTable = () => db("auth_sessions").select();
      usersTable = () => db("auth_users").select();
    }
  }, 60_000);

  afterAll(async () => {
    for (const close of closers) await close();
    await server?.close();
    await mysql?.drop();
    await deleteKeys(prefix);
  });

  it("registers users under the username and password rules", async () => {
    for (const username of ["Alice", "ab", "a b", "x".repeat(65), ""]) {
      const err = await errorOf(auth.register({ username, password: PASSWORD }));
      expect(err, username).toMatchObject({ code: Code.InvalidArgument });
      expect(err?.rawMessage).toMatch(/^username: /);
    }
    const short = await errorOf(auth.register({ username: "shorty", password: "elevenbytes" }));
    expect(short).toMatchObject({ code: Code.InvalidArgument });
    expect(short?.rawMessage).toMatch(/^password: must be at least 12 bytes/);
    const res = await auth.register({ username: "alice", password: PASSWORD });
    expect(res.username).toBe("alice");
    expect(res.userId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await errorOf(auth.register({ username: "alice", password: PASSWORD }))).toMatchObject({ code: Code.AlreadyExists });
  });

  it("answers a wrong password and an unknown user alike", async () => {
    await auth.register({ username: "bob", password: PASSWORD });
    const wrong = await errorOf(auth.login({ username: "bob", password: `${PASSWORD}!` }));
    const unknown = await errorOf(auth.login({ username: "nobody-here", password: PASSWORD }));
    expect(wrong).toMatchObject({ code: Code.Unauthenticated });
    expect(unknown).toMatchObject({ code: Code.Unauthenticated });
    expect(wrong?.rawMessage).toBe(unknown?.rawMessage);
  });

  it("issues opaque session tokens that identify the user", async () => {
    const before = Date.now();
    const session = await auth.login({ username: "alice", password: PASSWORD });
    expect(session.token).toMatch(/^kmt_[A-Za-z0-9_-]{43}$/);
    const expiresAt = Number(session.expiresAtMs);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 12 * 3600_000 - 1000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 12 * 3600_000);
    const me = await auth.whoAmI({}, { headers: { authorization: `Bearer ${session.token}` } });
    expect(me).toMatchObject({ username: "alice", principalId: session.userId, kind: PrincipalKind.USER, admin: false, expiresAtMs: session.expiresAtMs });
    // Other services accept it for user methods (the placeholder then answers Unimplemented).
    expect(await errorOf(keysAs(session.token).listKeyringKeys({}))).toMatchObject({ code: Code.Unimplemented });
  });

  it("stores only hashes of tokens and passwords", async () => {
    const { token } = await auth.login({ username: "alice", password: PASSWORD });
    if (backend === "mysql+redis") {
      const redis = new Redis(testRedisUrl());
      try {
        const keys = await redis.keys(`${prefix}auth:session:*`);
        expect(keys).toContain(`${prefix}auth:session:${sha256(token)}`);
        const values = await Promise.all(keys.map((k) => redis.get(k)));
        expect(JSON.stringify([keys, values])).not.toContain(token);
        expect(await redis.pttl(`${prefix}auth:session:${sha256(token)}`)).toBeGreaterThan(11 * 3600_000);
      } finally {
        redis.disconnect();
      }
      const users = await usersTable();
      expect(users.find((u) => u.username === "alice")?.password_hash).toMatch(/^scrypt\$16\$8\$1\$/);
      expect(JSON.stringify(users)).not.toContain(PASSWORD);
      expect(await sessionsTable()).toEqual([]);
    }
    // Whatever the store, a token's hash is not a credential.
    expect(await errorOf(auth.whoAmI({}, { headers: { authorization: `Bearer ${sha256(token)}` } }))).toMatchObject({ code: Code.Unauthenticated });
  });

  it("refuses an expired token", async () => {
    const { token, expiresAtMs } = await auth.login({ username: "alice", password: PASSWORD, ttlSeconds: 1 });
    expect((await auth.whoAmI({}, { headers: { authorization: `Bearer ${token}` } })).username).toBe("alice");
    await new Promise((r) => setTimeout(r, Math.max(0, Number(expiresAtMs) - Date.now()) + 100));
    expect(await errorOf(auth.whoAmI({}, { headers: { authorization: `Bearer ${token}` } }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await errorOf(keysAs(token).listKeyringKeys({}))).toMatchObject({ code: Code.Unauthenticated });
  });

  it("refuses a revoked token", async () => {
    const { token } = await auth.login({ username: "alice", password: PASSWORD });
    const headers = { authorization: `Bearer ${token}` };
    await auth.logout({}, { headers });
    expect(await errorOf(auth.whoAmI({}, { headers }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await errorOf(auth.logout({}, { headers }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await errorOf(keysAs(token).listKeyringKeys({}))).toMatchObject({ code: Code.Unauthenticated });
  });

  it("limits failed logins per username with ResourceExhausted and a retry delay", async () => {
    await auth.register({ username: "carol", password: PASSWORD });
    for (let i = 0; i < 3; i++) {
      expect(await errorOf(auth.login({ username: "carol", password: "wrong-password-000" }))).toMatchObject({ code: Code.Unauthenticated });
    }
    const limited = await errorOf(auth.login({ username: "carol", password: PASSWORD }));
    expect(limited).toMatchObject({ code: Code.ResourceExhausted });
    expect(limited?.rawMessage).toMatch(/too many failed logins; try again in \d+ s/);
    const retryAfter = Number(limited?.metadata.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // Another user from the same address is not locked out by carol's guesser.
    expect((await auth.login({ username: "alice", password: PASSWORD })).token).toMatch(/^kmt_/);
  });

  it.runIf(backend === "mysql+redis")("makes the first admin with `keymesh admin grant`, run against the database", async () => {
    await auth.register({ username: "dana", password: PASSWORD });
    const { token } = await auth.login({ username: "dana", password: PASSWORD });
    expect(await errorOf(keysAs(token).createKeyringKeys({ count: 1 }))).toMatchObject({ code: Code.PermissionDenied });
    const grant = spawnKeymesh(["admin", "grant", "dana"], { KEYMESH_DATABASE_URL: mysql!.url });
    expect((await grant.exited).code, grant.stderr()).toBe(0);
    expect(grant.stdout()).toContain("granted admin to dana");
    // The same session is an admin from its next call on.
    expect((await auth.whoAmI({}, { headers: { authorization: `Bearer ${token}` } })).admin).toBe(true);
    expect(await errorOf(keysAs(token).createKeyringKeys({ count: 1 }))).toMatchObject({ code: Code.Unimplemented });
    const unknown = spawnKeymesh(["admin", "grant", "nobody"], { KEYMESH_DATABASE_URL: mysql!.url });
    expect((await unknown.exited).code).toBe(1);
    expect(unknown.stderr()).toContain('no user "nobody"');
  });
});
