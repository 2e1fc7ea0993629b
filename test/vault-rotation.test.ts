import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { startVaultHost, type VaultBackend, type VaultHost } from "./support/vault.js";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/** Rows per master-key version, as GetMasterKeyStatus reports them. */
async function rowsPerVersion(vault: VaultHost): Promise<Record<number, number>> {
  const { versions } = await vault.client("admin:ops").getMasterKeyStatus({});
  return Object.fromEntries(versions.map((v) => [v.version, Number(v.rowCount)]));
}

async function primaryOf(vault: VaultHost): Promise<number> {
  const { versions } = await vault.client("admin:ops").getMasterKeyStatus({});
  return versions.find((v) => v.primary)!.version;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe("master-key rotation", () => {
  it("follows the production procedure: add the key everywhere, rotate, rewrap, retire, remove", async () => {
    const k1 = randomBytes(32).toString("base64");
    const k2 = randomBytes(32).toString("base64");
    // Before: one key.
    let vault = await startVaultHost({ backend: "mysql", env: { KEYMESH_MASTER_KEYS: `1:${k1}` } });
    const reuse = { mysql: vault.mysql!, dataDir: vault.dataDir };
    const alice = () => vault.client("user:alice");
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push((await alice().createSecret({ value: bytes(`value-${i}`) })).secret!.secretId);
    expect(await codeOf(vault.client("admin:ops").rotateMasterKey({}))).toBe(Code.FailedPrecondition); // no newer key configured
    await vault.close(true);

    // 1. Add the new key to every process: it is loaded, but not primary yet.
    vault = await startVaultHost({ backend: "mysql", env: { KEYMESH_MASTER_KEYS: `1:${k1},2:${k2}` }, reuse });
    expect(await primaryOf(vault)).toBe(1);
    const added = await alice().createSecret({ value: bytes("written before the rotation") });
    const meta = await alice().getSecretMetadata({ selector: { case: "secretId", value: added.secret!.secretId } });
    expect(meta.versions[0]!.masterKeyVersion).toBe(1);
    ids.push(added.secret!.secretId);
    expect(await codeOf(vault.client("admin:ops").retireMasterKey({ version: 1 }))).toBe(Code.FailedPrecondition); // primary
    expect(await codeOf(alice().rotateMasterKey({}))).toBe(Code.PermissionDenied); // not an administrator

    // 2. Rotate: version 2 becomes primary for new writes; the background rewrap starts.
    const rotated = await vault.client("admin:ops").rotateMasterKey({});
    expect([rotated.previousVersion, rotated.primaryVersion, rotated.rewrapQueued]).toEqual([1, 2, true]);
    const fresh = await alice().createSecret({ value: bytes("written after the rotation") });
    expect((await alice().getSecretMetadata({ selector: { case: "secretId", value: fresh.secret!.secretId } })).versions[0]!.masterKeyVersion).toBe(2);
    ids.push(fresh.secret!.secretId);

    // 3. Rewrap (the background worker, or `Rewrap` on demand) until version 1 holds nothing.
    await vault.client("admin:ops").rewrap({});
    await waitFor(async () => ((await rowsPerVersion(vault))[1] ?? 0) === 0, 20_000, "the rewrap");
    expect(await rowsPerVersion(vault)).toEqual({ 1: 0, 2: ids.length });

    // 4. Retire version 1: allowed only now that no row uses it, and once every process has
    // had time to pick up the new primary.
    await sleep(5_000);
    const retired = await vault.client("admin:ops").retireMasterKey({ version: 1 });
    expect(retired.versions.find((v) => v.version === 1)!.retired).toBe(true);
    await vault.close(true);

    // 5. Remove the old key from every process: everything still reads.
    vault = await startVaultHost({ backend: "mysql", env: { KEYMESH_MASTER_KEYS: `2:${k2}` }, reuse });
    for (const [i, id] of ids.entries()) {
      const v = text((await alice().getSecret({ selector: { case: "secretId", value: id } })).value);
      expect(v).toBe(i < 40 ? `value-${i}` : i === 40 ? "written before the rotation" : "written after the rotation");
    }
    expect(await primaryOf(vault)).toBe(2);
    await vault.close();
  }, 120_000);

  it.each<VaultBackend>(["sqlite", "mysql"])("never fails a read while rotating and rewrapping under load (%s)", async (backend) => {
    const vault = await startVaultHost({ backend, redis: backend === "mysql" });
    // Readers and writers stop before the vault closes, also when an assertion failed first.
    let stop = false;
    const load: Promise<unknown>[] = [];
    try {
      const alice = vault.client("user:alice");
      const read: { id: string; value: string }[] = [];
      for (let chunk = 0; chunk < 15; chunk++) {
        await Promise.all(
          Array.from({ length: 20 }, async (_, i) => {
            const value = `read-${chunk}-${i}-${randomBytes(4).toString("hex")}`;
            read.push({ id: (await alice.createSecret({ value: bytes(value) })).secret!.secretId, value });
          }),
        );
      }
      const written = await Promise.all(Array.from({ length: 3 }, async () => (await alice.createSecret({ value: bytes("w0") })).secret!.secretId));
      let reads = 0;
      const failures: string[] = [];
      const readers = Array.from({ length: 8 }, async () => {
        while (!stop) {
          const s = read[Math.floor(Math.random() * read.length)]!;
          try {
            const got = text((await alice.getSecret({ selector: { case: "secretId", value: s.id } })).value);
            if (got !== s.value) failures.push(`wrong value for ${s.id}`);
            reads++;
          } catch (err) {
            failures.push(String(err));
          }
        }
      });
      // Writers race the rewrap's compare-and-set on the same secrets.
      const last = new Map(written.map((id) => [id, "w0"]));
      const writers = written.map(async (id) => {
        for (let n = 1; !stop; n++) {
          await alice.addSecretVersion({ selector: { case: "secretId", value: id }, value: bytes(`w${n}`) });
          last.set(id, `w${n}`);
        }
      });
      load.push(...readers, ...writers);
      await sleep(300);
      const readsBefore = reads;
      const started = Date.now();
      const rotated = await vault.client("admin:ops").rotateMasterKey({});
      const target = rotated.primaryVersion;
      await waitFor(async () => Object.entries(await rowsPerVersion(vault)).every(([v, n]) => Number(v) === target || n === 0), 60_000, "the background rewrap");
      const readsDuring = reads - readsBefore;
      const rewrapMs = Date.now() - started;
      await sleep(200);
      stop = true;
      await Promise.all([...readers, ...writers]);
      expect(failures).toEqual([]);
      // The reads really overlapped the rotation and the rewrap.
      expect(readsDuring, `reads during ${rewrapMs} ms of rotation`).toBeGreaterThan(5);
      for (const [id, value] of last) expect(text((await alice.getSecret({ selector: { case: "secretId", value: id } })).value)).toBe(value);
      // Every version of every secret (old ones included) still opens under the new primary.
      const status = await rowsPerVersion(vault);
      expect(status[target]).toBeGreaterThan(303);
    } finally {
      stop = true;
      await Promise.allSettled(load);
      await vault.close();
    }
  }, 120_000);
});
