import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../cli/main.js";
import { startVaultHost, type VaultHost } from "./support/vault.js";

let vault: VaultHost;
beforeAll(async () => {
  vault = await startVaultHost({ backend: "sqlite" });
}, 60_000);
afterAll(() => vault?.close());

/** Runs `keymesh <args>` in-process against the test vault, with `stdin` as its input. */
async function run(args: string[], stdin = "", signal?: AbortSignal, onOutput?: (out: string) => void) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (c: Buffer) => {
    out += c.toString();
    onOutput?.(out);
  });
  stderr.on("data", (c: Buffer) => (err += c.toString()));
  // The CLI acts as the development root token (an admin: `keymesh vault` and `keymesh audit` need one).
  const io = { stdout, stderr, env: { KEYMESH_URL: vault.url, KEYMESH_TOKEN: await vault.token("admin:root") }, stdin: Readable.from([Buffer.from(stdin)]), signal };
  const code = await main(args, io);
  return { code, out, err };
}

describe("keymesh secrets / vault / audit", () => {
  it("puts values from stdin or a file, never from argv unless asked, and reads them back", async () => {
    const put = await run(["secrets", "put", "app/db-url", "--label", "env=dev"], "mysql://app:s3cret@db/app");
    expect(put.code).toBe(0);
    expect(put.out).toMatch(/^created app\/db-url \(id [0-9a-f-]{36}\), version 1\n$/);
    const file = join(mkdtempSync(join(tmpdir(), "keymesh-cli-")), "value");
    writeFileSync(file, "mysql://app:rotated@db/app");
    expect((await run(["secrets", "put", "app/db-url", "--file", file])).out).toMatch(/^app\/db-url: version 2 /);
    expect((await run(["secrets", "get", "app/db-url"])).out).toBe("mysql://app:rotated@db/app");
    expect((await run(["secrets", "get", "app/db-url", "--version", "1"])).out).toBe("mysql://app:s3cret@db/app");
    const inline = await run(["secrets", "put", "throwaway", "--value", "x"]);
    expect(inline.code).toBe(0);
    expect(inline.err).toMatch(/shell history/);
    expect((await run(["secrets", "put", "app/db-url", "--cas", "1"], "stale")).code).toBe(1);
    expect((await run(["secrets", "put", "x", "--file", file, "--value", "y"])).code).toBe(2);
  });

  it("lists, versions, deletes, undeletes, destroys and grants", async () => {
    await run(["secrets", "put", "app/api-key"], "k1");
    await run(["secrets", "put", "app/api-key"], "k2");
    const list = await run(["secrets", "list", "app/", "--json"]);
    expect(JSON.parse(list.out).map((s: { name: string }) => s.name)).toEqual(["app/api-key", "app/db-url"]);
    expect((await run(["secrets", "delete", "app/api-key", "--version", "2"])).out).toBe("app/api-key v2: deleted\n");
    expect((await run(["secrets", "get", "app/api-key"])).out).toBe("k1");
    expect((await run(["secrets", "undelete", "app/api-key", "--version", "2"])).out).toBe("app/api-key v2: active\n");
    expect((await run(["secrets", "destroy", "app/api-key", "--version", "1"])).out).toBe("app/api-key v1: destroyed\n");
    const versions = JSON.parse((await run(["secrets", "versions", "app/api-key", "--json"])).out);
    expect(versions.versions.map((v: { state: string }) => v.state)).toEqual(["destroyed", "active"]);
    const bob = await vault.principalId("user:bob");
    expect((await run(["secrets", "grant", "app/api-key", bob])).code).toBe(0);
    expect(new TextDecoder().decode((await vault.client("user:bob").getSecret({ selector: { case: "secretId", value: versions.secretId } })).value)).toBe("k2");
    expect((await run(["secrets", "revoke", "app/api-key", bob])).code).toBe(0);
    expect((await run(["secrets", "get", "nope"])).code).toBe(1);
  });

  it("rotates the master key, shows its status and tails the audit trail", { timeout: 30_000 }, async () => {
    const rotated = await run(["vault", "rotate"]);
    expect(rotated.out).toMatch(/^master key v2 is primary \(was v1\)/);
    const rewrap = await run(["vault", "rewrap"]);
    expect(rewrap.code).toBe(0);
    const status = JSON.parse((await run(["vault", "status", "--json"])).out);
    expect(status.find((v: { version: number }) => v.version === 1).rowCount).toBe(0);
    // Retiring waits until every process has had time to pick up the new primary.
    const early = await run(["vault", "retire", "1"]);
    expect(early.code).toBe(1);
    expect(early.err).toMatch(/became primary .* retry in/);
    await new Promise((r) => setTimeout(r, 5_000));
    expect((await run(["vault", "retire", "1"])).out).toMatch(/v1\s+retired/);
    const tail = await run(["audit", "tail", "-n", "5", "--json"]);
    const events = tail.out.trim().split("\n").map((l) => JSON.parse(l));
    expect(events).toHaveLength(5);
    expect(events.at(-2).outcome).toBe("denied");
    expect(events.at(-1).method).toBe("keymesh.vault.v1.VaultService/RetireMasterKey");
    expect(tail.out).not.toContain("s3cret");
  });

  it("follows the audit trail as events arrive", { timeout: 30_000 }, async () => {
    const stop = new AbortController();
    let seen = "";
    const following = run(["audit", "tail", "--follow", "-n", "1"], "", stop.signal, (out) => {
      seen = out;
    });
    await new Promise((r) => setTimeout(r, 500));
    await vault.client("user:carol").createSecret({ value: new TextEncoder().encode("followed") });
    const deadline = Date.now() + 15_000;
    const carol = await vault.principalId("user:carol");
    while (!seen.includes(`${carol} keymesh.vault.v1.VaultService/CreateSecret`)) {
      if (Date.now() > deadline) throw new Error(`no new event followed:\n${seen}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    stop.abort();
    expect((await following).code).toBe(0);
  });
});
