import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../services/shared/config.js";
import { loadProcessSecrets } from "../services/shared/secrets/process-secrets.js";
import { startVaultHost, type VaultHost } from "./support/vault.js";

let vault: VaultHost;
beforeAll(async () => {
  vault = await startVaultHost({ backend: "sqlite" });
  // Stored by the user whose session token the secrets client presents.
  await vault.client("user:dev").createSecret({ name: "database-url", value: new TextEncoder().encode("mysql://app:from-vault@db:3306/keymesh") });
}, 60_000);
afterAll(() => vault?.close());

describe("keymesh's own secrets through the provider chain", () => {
  it("leaves the environment alone when no secret source is configured", async () => {
    const env = { KEYMESH_PORT: "9000" };
    expect(await loadProcessSecrets(env)).toBe(env);
  });

  it("reads KEYMESH_SECRET_<NAME> first, and a directly set variable wins over everything", async () => {
    const token = "t".repeat(32);
    const filled = await loadProcessSecrets({
      KEYMESH_SECRET_SERVICE_TOKEN: token,
      KEYMESH_SECRETS_URL: vault.url,
      KEYMESH_SECRETS_TOKEN: await vault.token("user:dev"),
    });
    expect(filled.KEYMESH_SERVICE_TOKEN).toBe(token);
    expect(loadConfig(filled).serviceToken).toBe(token);
    const direct = await loadProcessSecrets({ KEYMESH_SERVICE_TOKEN: "d".repeat(32), KEYMESH_SECRET_SERVICE_TOKEN: token });
    expect(direct.KEYMESH_SERVICE_TOKEN).toBe("d".repeat(32));
  });

  it("falls back to the vault for what the environment does not have", async () => {
    const filled = await loadProcessSecrets({
      KEYMESH_SECRETS_URL: vault.url,
      KEYMESH_SECRETS_TOKEN: await vault.token("user:dev"),
      KEYMESH_SECRET_SERVICE_TOKEN: "s".repeat(20),
    });
    expect(filled.KEYMESH_DATABASE_URL).toBe("mysql://app:from-vault@db:3306/keymesh");
    expect(loadConfig(filled).databaseUrl).toBe("mysql://app:from-vault@db:3306/keymesh");
    // env only: the vault is not asked, the variable stays unset.
    const envOnly = await loadProcessSecrets({ KEYMESH_SECRETS_URL: vault.url, KEYMESH_SECRETS_PROVIDER: "env" });
    expect(envOnly.KEYMESH_DATABASE_URL).toBeUndefined();
  });
});
