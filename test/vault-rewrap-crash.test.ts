import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { createDatabase } from "../services/shared/storage/database.js";
import { createTestDatabase } from "./support/mysql.js";
import { readRootToken } from "../services/shared/root-token.js";
import { bearer } from "./support/host.js";
import { spawnKeymesh, type KeymeshProcess } from "./support/process.js";

const running: KeymeshProcess[] = [];
afterAll(() => {
  for (const p of running) if (p.child.exitCode === null) p.child.kill("SIGKILL");
});

/** Serves the vault with --dev: calls act as the development root token in its data directory. */
async function serveVault(env: Record<string, string> & { KEYMESH_DATA_DIR: string }) {
  const proc = spawnKeymesh(["serve", "vault", "--dev"], { KEYMESH_PORT: "0", ...env });
  running.push(proc);
  const line = await proc.waitForLog((l) => l.msg === "keymesh serving", 60_000);
  const token = readRootToken(env.KEYMESH_DATA_DIR)!;
  const client = createClient(VaultService, createGrpcTransport({ baseUrl: String(line.url), interceptors: [bearer(token)] }));
  return { proc, client };
}

describe("rewrap after a crash", () => {
  it("resumes when the process running it is SIGKILLed half-way, and loses nothing", async () => {
    const mysql = await createTestDatabase();
    const dataDir = mkdtempSync(join(tmpdir(), "keymesh-rewrap-"));
    const db = createDatabase({ url: mysql.url, dataDir });
    const env = { KEYMESH_DATABASE_URL: mysql.url, KEYMESH_DATA_DIR: dataDir };
    const perVersion = async () => {
      const rows = (await db.primary("secret_versions").select("master_key_version").count({ n: "*" }).groupBy("master_key_version")) as {
        master_key_version: number;
        n: number;
      }[];
      return Object.fromEntries(rows.map((r) => [Number(r.master_key_version), Number(r.n)]));
    };
    try {
      // The second rewrap batch (of 200 rows) kills the process right after it committed.
      const first = await serveVault({ ...env, KEYMESH_FAILPOINTS: "rewrap.after-batch=kill@2" });
      const client = first.client;
      const values = new Map<string, string>();
      for (let chunk = 0; chunk < 35; chunk++) {
        await Promise.all(
          Array.from({ length: 20 }, async (_, i) => {
            const value = `crash-${chunk}-${i}`;
            const { secret } = await client.createSecret({ value: new TextEncoder().encode(value) });
            values.set(secret!.secretId, value);
          }),
        );
      }
      expect(await perVersion()).toEqual({ 1: 700 });
      await client.rotateMasterKey({});
      const exit = await first.proc.exited;
      expect(exit.signal).toBe("SIGKILL");
      const midway = await perVersion();
      expect(midway[2]).toBe(400);
      expect(midway[1]).toBe(300);

      // A fresh process finds rows off the primary at start and finishes the job.
      const second = await serveVault(env);
      const deadline = Date.now() + 60_000;
      while ((await perVersion())[1] !== undefined) {
        if (Date.now() > deadline) throw new Error(`rewrap did not resume: ${JSON.stringify(await perVersion())}`);
        await sleep(100);
      }
      expect(await perVersion()).toEqual({ 2: 700 });
      const again = second.client;
      for (const [id, value] of values) {
        const got = await again.getSecret({ selector: { case: "secretId", value: id } });
        expect(new TextDecoder().decode(got.value)).toBe(value);
      }
      second.proc.child.kill("SIGTERM");
      await second.proc.exited;
    } finally {
      await db.close();
      await mysql.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
