import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VersionState } from "../gen/keymesh/vault/v1/vault_pb.js";
import { startVaultHost, type VaultBackend, type VaultHost } from "./support/vault.js";

/** The Connect code a promise rejects with (or "ok"). */
async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe.each<VaultBackend>(["sqlite", "mysql"])("VaultService on %s", (backend) => {
  let vault: VaultHost;
  beforeAll(async () => {
    vault = await startVaultHost({ backend });
  }, 60_000);
  afterAll(() => vault?.close());
  const alice = () => vault.client("user:alice");
  const bob = () => vault.client("user:bob");
  const admin = () => vault.client("admin:root");

  it("creates a secret and reads it back by id and by name, latest or a given version", async () => {
    const created = await alice().createSecret({ name: "db/password", value: bytes("hunter2"), labels: { env: "prod" } });
    const id = created.secret!.secretId;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.version).toBe(1);
    expect(created.secret!.ownerId).toBe(await vault.principalId("user:alice"));
    expect(created.secret!.ownerId).toMatch(/^user:[0-9a-f-]{36}$/);
    const byId = await alice().getSecret({ selector: { case: "secretId", value: id } });
    expect(text(byId.value)).toBe("hunter2");
    expect(byId.version).toBe(1);
    const v2 = await alice().addSecretVersion({ selector: { case: "name", value: "db/password" }, value: bytes("correct horse") });
    expect(v2.version).toBe(2);
    expect(text((await alice().getSecret({ selector: { case: "name", value: "db/password" } })).value)).toBe("correct horse");
    expect(text((await alice().getSecret({ selector: { case: "secretId", value: id }, version: 1 })).value)).toBe("hunter2");
    const meta = await alice().getSecretMetadata({ selector: { case: "secretId", value: id } });
    expect(meta.secret!.labels).toEqual({ env: "prod" });
    expect(meta.versions.map((v) => [v.version, v.state, v.size])).toEqual([
      [1, VersionState.ACTIVE, 7],
      [2, VersionState.ACTIVE, 13],
    ]);
    expect(await codeOf(alice().getSecret({ selector: { case: "secretId", value: id }, version: 9 }))).toBe(Code.NotFound);
  });

  it("stores only ciphertext, bound to its secret id and version", async () => {
    const { secret } = await alice().createSecret({ value: bytes("plaintext-never-stored") });
    const rows = await vault.db.primary("secret_versions").where({ secret_id: secret!.secretId });
    expect(rows).toHaveLength(1);
    const stored = Buffer.from(rows[0].ciphertext as Uint8Array);
    expect(stored.includes(Buffer.from("plaintext-never-stored"))).toBe(false);
    expect(stored[0]).toBe(0x01); // the envelope's format byte
    expect(stored.length).toBe(17 + "plaintext-never-stored".length + 16);
  });

  it("applies check-and-set: a stale expectation fails, and of two racing writers exactly one wins", async () => {
    const { secret } = await alice().createSecret({ name: "cas", value: bytes("v1") });
    const sel = { case: "secretId" as const, value: secret!.secretId };
    expect(await codeOf(alice().addSecretVersion({ selector: sel, value: bytes("x"), expectedVersion: 5 }))).toBe(Code.FailedPrecondition);
    for (let round = 1; round <= 5; round++) {
      const results = await Promise.all(
        ["a", "b"].map((w) => codeOf(alice().addSecretVersion({ selector: sel, value: bytes(`${w}${round}`), expectedVersion: round }))),
      );
      expect(results.filter((r) => r === "ok")).toHaveLength(1);
      expect(results.filter((r) => r === Code.FailedPrecondition)).toHaveLength(1);
    }
    const meta = await alice().getSecretMetadata({ selector: sel });
    expect(meta.secret!.currentVersion).toBe(6);
    expect(meta.versions.map((v) => v.version)).toEqual([1, 2, 3, 4, 5, 6]);
    // 0 means "create only": it creates a missing name once, then refuses.
    expect((await alice().addSecretVersion({ selector: { case: "name", value: "fresh" }, value: bytes("x"), expectedVersion: 0 })).version).toBe(1);
    expect(await codeOf(alice().addSecretVersion({ selector: { case: "name", value: "fresh" }, value: bytes("y"), expectedVersion: 0 }))).toBe(
      Code.FailedPrecondition,
    );
  });

  it("soft-deletes, undeletes and destroys versions; a destroyed ciphertext is gone", async () => {
    const { secret } = await alice().createSecret({ value: bytes("one") });
    const id = secret!.secretId;
    await alice().addSecretVersion({ selector: { case: "secretId", value: id }, value: bytes("two") });
    const deleted = await alice().deleteSecretVersion({ secretId: id, version: 2 });
    expect(deleted.version!.state).toBe(VersionState.DELETED);
    // Latest active is now version 1; version 2 explicitly is refused until undeleted.
    expect(text((await alice().getSecret({ selector: { case: "secretId", value: id } })).value)).toBe("one");
    expect(await codeOf(alice().getSecret({ selector: { case: "secretId", value: id }, version: 2 }))).toBe(Code.FailedPrecondition);
    await alice().undeleteSecretVersion({ secretId: id, version: 2 });
    expect(text((await alice().getSecret({ selector: { case: "secretId", value: id } })).value)).toBe("two");
    const destroyed = await alice().destroySecretVersion({ secretId: id, version: 2 });
    expect(destroyed.version!.state).toBe(VersionState.DESTROYED);
    expect(destroyed.version!.masterKeyVersion).toBe(0);
    const row = await vault.db.primary("secret_versions").where({ secret_id: id, version: 2 }).first();
    expect(row.ciphertext).toBeNull();
    expect(await codeOf(alice().undeleteSecretVersion({ secretId: id, version: 2 }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(alice().deleteSecretVersion({ secretId: id, version: 7 }))).toBe(Code.NotFound);
  });

  it("lists the caller's secrets by name prefix, paged, metadata only", async () => {
    for (const n of ["app/a", "app/b", "app/c", "other/x"]) await bob().createSecret({ name: n, value: bytes(`value-of-${n}`) });
    const first = await bob().listSecrets({ namePrefix: "app/", pageSize: 2 });
    expect(first.secrets.map((s) => s.name)).toEqual(["app/a", "app/b"]);
    const second = await bob().listSecrets({ namePrefix: "app/", pageSize: 2, pageToken: first.nextPageToken });
    expect(second.secrets.map((s) => s.name)).toEqual(["app/c"]);
    expect(second.nextPageToken).toBe("");
    expect((await alice().listSecrets({ namePrefix: "app/" })).secrets).toEqual([]);
    expect(await codeOf(bob().listSecrets({ pageToken: "garbage" }))).toBe(Code.InvalidArgument);
  });

  it("hides other principals' secrets (NotFound, same as a missing one) until granted", async () => {
    const { secret } = await alice().createSecret({ name: "private", value: bytes("alice-only") });
    const id = secret!.secretId;
    const sel = { case: "secretId" as const, value: id };
    const missing = await rejection(bob().getSecret({ selector: { case: "secretId", value: "00000000-0000-4000-8000-000000000000" } }));
    const hidden = await rejection(bob().getSecret({ selector: sel }));
    expect(hidden.code).toBe(Code.NotFound);
    expect(hidden.rawMessage.replace(id, "ID")).toBe(missing.rawMessage.replace("00000000-0000-4000-8000-000000000000", "ID"));
    expect(await codeOf(bob().getSecret({ selector: { case: "name", value: "private" } }))).toBe(Code.NotFound);
    expect(await codeOf(bob().getSecretMetadata({ selector: sel }))).toBe(Code.NotFound);
    expect(await codeOf(bob().destroySecretVersion({ secretId: id, version: 1 }))).toBe(Code.NotFound);
    const bobId = await vault.principalId("user:bob");
    expect(await codeOf(bob().grantSecretAccess({ secretId: id, principalId: bobId }))).toBe(Code.NotFound);

    await alice().grantSecretAccess({ secretId: id, principalId: bobId });
    expect(text((await bob().getSecret({ selector: sel })).value)).toBe("alice-only");
    expect(text((await bob().getSecret({ selector: { case: "name", value: "private" } })).value)).toBe("alice-only");
    expect(await codeOf(bob().addSecretVersion({ selector: sel, value: bytes("mine now") }))).toBe(Code.PermissionDenied);
    await alice().revokeSecretAccess({ secretId: id, principalId: bobId });
    expect(await codeOf(bob().getSecret({ selector: sel }))).toBe(Code.NotFound);

    // Administrators manage any secret, and their reads are audited like anyone's.
    expect(text((await admin().getSecret({ selector: sel })).value)).toBe("alice-only");
    const events = await admin().listAuditEvents({ objectId: id, pageSize: 50 });
    const reads = events.events.filter((e) => e.method.endsWith("/GetSecret"));
    expect(reads.map((e) => e.principalId)).toContain("user:root");
    expect(await codeOf(vault.client("anonymous").getSecret({ selector: sel }))).toBe(Code.Unauthenticated);
  });

  it("refuses bad input with InvalidArgument and writes nothing", async () => {
    const count = async () => Number((await vault.db.primary("secrets").count({ n: "*" }))[0]!.n);
    const before = await count();
    const cases = [
      () => alice().createSecret({ value: new Uint8Array() }),
      () => alice().createSecret({ value: new Uint8Array(64 * 1024 + 1) }),
      () => alice().createSecret({ name: "bad name!", value: bytes("x") }),
      () => alice().createSecret({ name: "x".repeat(256), value: bytes("x") }),
      () => alice().createSecret({ value: bytes("x"), labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) }),
      () => alice().createSecret({ value: bytes("x"), labels: { "Upper": "v" } }),
      () => alice().getSecret({ selector: { case: "secretId", value: "not-a-uuid" } }),
      () => alice().getSecret({ selector: { case: undefined } }),
      () => alice().grantSecretAccess({ secretId: "00000000-0000-4000-8000-000000000000", principalId: "bob" }),
    ];
    for (const c of cases) expect(await codeOf(c())).toBe(Code.InvalidArgument);
    expect(await count()).toBe(before);
    // The size limit is inclusive.
    expect(await codeOf(alice().createSecret({ value: new Uint8Array(64 * 1024) }))).toBe("ok");
    expect(await codeOf(alice().createSecret({ name: "dup", value: bytes("x") }))).toBe("ok");
    expect(await codeOf(alice().createSecret({ name: "dup", value: bytes("y") }))).toBe(Code.AlreadyExists);
    // Names are per owner: bob may use the same one.
    expect(await codeOf(bob().createSecret({ name: "dup", value: bytes("z") }))).toBe("ok");
  });

  it("audits every call, denied ones too, with HMACed ids and no values", async () => {
    const { secret } = await alice().createSecret({ name: "audited", value: bytes("audit-me") });
    const id = secret!.secretId;
    await alice().getSecret({ selector: { case: "secretId", value: id } });
    await codeOf(bob().getSecret({ selector: { case: "secretId", value: id } }));
    const { events } = await admin().listAuditEvents({ objectId: id });
    const summary = events.map((e) => [e.method.split("/")[1], e.principalId, e.outcome, e.code]).reverse();
    expect(summary).toEqual([
      ["CreateSecret", await vault.principalId("user:alice"), 1, ""],
      ["GetSecret", await vault.principalId("user:alice"), 1, ""],
      ["GetSecret", await vault.principalId("user:bob"), 2, "not_found"],
    ]);
    for (const e of events) {
      expect(e.objectHmac).toMatch(/^[0-9a-f]{64}$/);
      expect(e.objectKind).toBe("secret");
      expect(e.peer).toMatch(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
    }
    const rows = await vault.db.primary("audit_events").select("*");
    const dump = JSON.stringify(rows);
    expect(dump).not.toContain(id);
    expect(dump).not.toContain("audited");
    expect(dump).not.toContain("audit-me");
    expect(await codeOf(alice().listAuditEvents({}))).toBe(Code.PermissionDenied);
    // Following: events after a given one come oldest first.
    const last = events[events.length - 1]!;
    const after = await admin().listAuditEvents({ afterEventId: last.eventId, objectId: id });
    expect(after.events.map((e) => e.eventId)).toEqual([...events].reverse().slice(1).map((e) => e.eventId));
  });

  it("fails closed: when the audit trail cannot be written, reads fail with Unavailable and return nothing", async () => {
    const { secret } = await alice().createSecret({ value: bytes("fail-closed") });
    const sel = { case: "secretId" as const, value: secret!.secretId };
    const k = vault.db.primary;
    if (backend === "mysql") {
      await k.raw("CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_events FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit is read-only'");
    } else {
      await k.raw("CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit is read-only'); END");
    }
    try {
      const err = await rejection(alice().getSecret({ selector: sel }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/audit/);
      expect(err.rawMessage).not.toContain("fail-closed");
      expect(await codeOf(alice().createSecret({ value: bytes("x") }))).toBe(Code.Unavailable);
    } finally {
      await k.raw("DROP TRIGGER audit_read_only");
    }
    expect(text((await alice().getSecret({ selector: sel })).value)).toBe("fail-closed");
  });

  it("refuses tampered ciphertexts with DataLoss, never wrong plaintext", async () => {
    const k = vault.db.primary;
    const make = async (v: string) => (await alice().createSecret({ value: bytes(v) })).secret!.secretId;
    const read = (id: string) => codeOf(alice().getSecret({ selector: { case: "secretId", value: id } }));
    const ciphertext = async (id: string) => Buffer.from((await k("secret_versions").where({ secret_id: id, version: 1 }).first()).ciphertext);
    const store = (id: string, c: Buffer) => k("secret_versions").where({ secret_id: id, version: 1 }).update({ ciphertext: c });
    const flip = async (offset: (len: number) => number) => {
      const id = await make("tamper-target");
      const c = await ciphertext(id);
      c[offset(c.length)]! ^= 0x01;
      await store(id, c);
      return read(id);
    };
    expect(await flip(() => 8)).toBe(Code.DataLoss); // nonce
    expect(await flip((n) => n - 3)).toBe(Code.DataLoss); // tag
    expect(await flip(() => 18)).toBe(Code.DataLoss); // ciphertext body
    expect(await flip(() => 0)).toBe(Code.DataLoss); // format byte
    expect(await flip(() => 4)).toBe(Code.DataLoss); // master-key version in the header
    const a = await make("value-a");
    const b = await make("value-b");
    const [ca, cb] = [await ciphertext(a), await ciphertext(b)];
    await store(a, cb);
    await store(b, ca);
    expect(await read(a)).toBe(Code.DataLoss);
    expect(await read(b)).toBe(Code.DataLoss);
    const t = await make("truncate-me");
    const ct = await ciphertext(t);
    await store(t, ct.subarray(0, ct.length - 1));
    expect(await read(t)).toBe(Code.DataLoss);
    await store(t, ct.subarray(0, 10));
    expect(await read(t)).toBe(Code.DataLoss);
    // A version's ciphertext copied onto another version of the same secret does not open either.
    const { secret } = await alice().createSecret({ value: bytes("v1") });
    const id = secret!.secretId;
    await alice().addSecretVersion({ selector: { case: "secretId", value: id }, value: bytes("v2") });
    const v1 = Buffer.from((await k("secret_versions").where({ secret_id: id, version: 1 }).first()).ciphertext);
    await k("secret_versions").where({ secret_id: id, version: 2 }).update({ ciphertext: v1 });
    expect(await read(id)).toBe(Code.DataLoss);
  });
});
