import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import knex, { type Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { AuditOutcome, type AuditEvent } from "../gen/keymesh/vault/v1/vault_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { createAuthModule } from "../services/auth/module.js";
import { keysModule } from "../services/keys/module.js";
import { vaultModule } from "../services/vault/module.js";
import { bearer, hostCredentials, startTestHost, type TestHost } from "./support/host.js";
import { createTestDatabase, type TestDatabase } from "./support/mysql.js";

/**
 * The audit trail beyond the vault: logins (good, bad, rate-limited), logouts, keyring
 * creation and refused key leases, read back through VaultService.ListAuditEvents.
 */
const PASSWORD = "canary-password-8f3a1c";
const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

let server: TestHost;
let mysql: TestDatabase;
let db: Knex;
beforeAll(async () => {
  mysql = await createTestDatabase();
  db = knex({ client: "mysql2", connection: mysql.url });
  const auth = createAuthModule({ limits: { username: { maxFailures: 2, windowMs: 60_000 }, peer: { maxFailures: 50, windowMs: 60_000 } } });
  server = await startTestHost({ services: [auth, keysModule, vaultModule], env: { KEYMESH_DATABASE_URL: mysql.url } });
}, 60_000);
afterAll(async () => {
  await server?.close();
  await db?.destroy();
  await mysql?.drop();
});

const admin = () => createClient(VaultService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.token)] }));
const summary = (events: AuditEvent[]) => events.map((e) => [e.method.split("/")[1], e.outcome, e.code]).reverse();

describe("audit trail of auth and keys", () => {
  it("records logins, failed and rate-limited logins and logouts under the account's HMAC, never a password or token", async () => {
    const auth = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
    await auth.register({ username: "alice", password: PASSWORD });
    const { token } = await auth.login({ username: "alice", password: PASSWORD });
    expect(await errorOf(auth.login({ username: "alice", password: `${PASSWORD}x` }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await errorOf(auth.login({ username: "alice", password: `${PASSWORD}y` }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await errorOf(auth.login({ username: "alice", password: PASSWORD }))).toMatchObject({ code: Code.ResourceExhausted });
    const asAlice = createClient(AuthService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }));
    await asAlice.logout({});

    const { events } = await admin().listAuditEvents({ objectId: "alice", pageSize: 50 });
    expect(summary(events)).toEqual([
      ["Login", AuditOutcome.OK, ""],
      ["Login", AuditOutcome.DENIED, "unauthenticated"],
      ["Login", AuditOutcome.DENIED, "unauthenticated"],
      ["Login", AuditOutcome.DENIED, "resource_exhausted"],
      ["Logout", AuditOutcome.OK, ""],
    ]);
    for (const e of events) {
      expect(e.objectKind).toBe("user");
      expect(e.objectHmac).toMatch(/^[0-9a-f]{64}$/);
    }
    // Logins are made anonymously; the logout names the user who logged out.
    expect(events[0]!.principalId).toMatch(/^user:[0-9a-f-]{36}$/);
    const everything = JSON.stringify((await admin().listAuditEvents({ pageSize: 1000 })).events, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v));
    expect(everything).not.toContain(PASSWORD);
    expect(everything).not.toContain(token);
    expect(everything).not.toContain("alice");
  });

  it("records keyring creation and refused key leases", async () => {
    const keys = createClient(KeyManagementService, createGrpcTransport({ baseUrl: server.url, interceptors: [hostCredentials(server)] }));
    // No key yet: the lease is refused, and the refusal is on record under the job's HMAC.
    const refused = await errorOf(keys.acquireKeyLease({ holder: "executor-1", ttlMs: 5_000, jobId: "job-audit" }));
    expect(refused).toBeInstanceOf(ConnectError);
    const leases = (await admin().listAuditEvents({ objectId: "job-audit" })).events;
    expect(leases.map((e) => [e.method, e.outcome, e.principalId])).toEqual([
      ["keymesh.keys.v1.KeyManagementService/AcquireKeyLease", AuditOutcome.DENIED, "service:keymesh"],
    ]);

    await keys.createKeyringKeys({ count: 2 });
    const granted = await keys.acquireKeyLease({ holder: "executor-1", ttlMs: 5_000, jobId: "job-audit" });
    expect(granted.lease?.keyId).toBeTruthy();
    const all = (await admin().listAuditEvents({ pageSize: 1000 })).events;
    const created = all.filter((e) => e.method.endsWith("/CreateKeyringKeys"));
    expect(created.map((e) => [e.outcome, e.principalId])).toEqual([[AuditOutcome.OK, "user:root"]]);
    // Granted leases are not audited (one per signing batch); only the refusal is there.
    expect((await admin().listAuditEvents({ objectId: "job-audit" })).events).toHaveLength(1);
  });

  it("fails closed: a login whose event cannot be stored answers Unavailable and hands out no token", async () => {
    const auth = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
    await auth.register({ username: "carol", password: PASSWORD });
    await db.raw("CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_events FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit is read-only'");
    try {
      const err = await errorOf(auth.login({ username: "carol", password: PASSWORD }));
      expect(err?.code).toBe(Code.Unavailable);
      expect(err?.rawMessage).toMatch(/audit/);
      expect(err?.rawMessage).not.toContain(PASSWORD);
      const keys = createClient(KeyManagementService, createGrpcTransport({ baseUrl: server.url, interceptors: [hostCredentials(server)] }));
      expect(await errorOf(keys.createKeyringKeys({ count: 1 }))).toMatchObject({ code: Code.Unavailable });
    } finally {
      await db.raw("DROP TRIGGER audit_read_only");
    }
    expect((await auth.login({ username: "carol", password: PASSWORD })).token).toMatch(/\S{32,}/);
  });
});
