type Env = Readonly<Record<string, string | undefined>>;

/**
 * keymesh's own secrets and the configuration variable each one fills. A process reads them
 * through the secrets client's provider chain, env first: `KEYMESH_SERVICE_TOKEN` itself,
 * then `KEYMESH_SECRET_SERVICE_TOKEN`, then (when `KEYMESH_SECRETS_URL` is set and
 * `KEYMESH_SECRETS_PROVIDER` includes `vault`) the vault secret named `service-token`.
 */
export const PROCESS_SECRETS: readonly { readonly name: string; readonly variable: string }[] = [
  { name: "service-token", variable: "KEYMESH_SERVICE_TOKEN" },
  { name: "database-url", variable: "KEYMESH_DATABASE_URL" },
];

/**
 * Returns `env` with keymesh's own secrets filled in from the provider chain. Variables set
 * directly win; a secret no provider has stays unset (the configuration default applies).
 * Without `KEYMESH_SECRET_*` variables or a vault URL this returns `env` unchanged.
 */
export async function loadProcessSecrets(env: Env): Promise<Env> {
  const missing = PROCESS_SECRETS.filter((s) => env[s.variable] === undefined || env[s.variable] === "");
  const anySource = env.KEYMESH_SECRETS_URL !== undefined || Object.keys(env).some((k) => k.startsWith("KEYMESH_SECRET_"));
  if (missing.length === 0 || !anySource) return env;
  // Loaded only when needed: most processes take these from their environment directly.
  const { createSecretsClient, SecretNotFoundError } = await import("./client.js");
  const client = createSecretsClient({
    env,
    ...(env.KEYMESH_SECRETS_URL === undefined ? {} : { url: env.KEYMESH_SECRETS_URL }),
    ...(env.KEYMESH_SECRETS_TOKEN === undefined ? {} : { token: env.KEYMESH_SECRETS_TOKEN }),
    ...(env.KEYMESH_SECRETS_PROVIDER === undefined ? {} : { provider: env.KEYMESH_SECRETS_PROVIDER }),
  });
  try {
    const filled: Record<string, string | undefined> = { ...env };
    for (const s of missing) {
      try {
        filled[s.variable] = await client.getString(s.name);
      } catch (err) {
        if (!(err instanceof SecretNotFoundError)) throw err;
      }
    }
    return filled;
  } finally {
    client.close();
  }
}
