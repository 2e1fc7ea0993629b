import type { Logger } from "pino";
import { systemClock, type Clock } from "./clock.js";
import { createEnvProvider, createProviderChain, createVaultProvider, envVariableFor, type SecretProvider } from "./providers.js";

/**
 * The application secrets client: typed reads by name through a provider chain, an
 * in-memory cache with a TTL, a background refresh shortly before an entry expires, and
 * stale-while-error: when the providers cannot be reached, a cached value keeps being served
 * (and the failure logged) for at most `maxStale` past its expiry, then reads fail.
 */

/** No provider has a secret of that name. */
export class SecretNotFoundError extends Error {
  override readonly name = "SecretNotFoundError";
  constructor(readonly secret: string) {
    super(`secret "${secret}" not found (vault name, or ${envVariableFor(secret)} for the env provider)`);
  }
}

/** Options for `createSecretsClient`. */
export interface SecretsClientOptions {
  /** The vault's URL; unset: env provider only. */
  readonly url?: string;
  /** Bearer token for the vault. */
  readonly token?: string;
  /** How long a fetched value is served without asking again (ms, default 5 minutes). */
  readonly ttl?: number;
  /** How long before expiry a value in use is refreshed in the background (ms, default ttl / 5). */
  readonly refresh?: number;
  /** How long past expiry a cached value may still be served while providers fail (ms, default ttl). */
  readonly maxStale?: number;
  /**
   * `KEYMESH_SECRETS_PROVIDER`: "env" (env only), "vault" (vault only) or "env,vault" (env
   * first, the default when a url is given).
   */
  readonly provider?: string;
  /** Where the env provider reads `KEYMESH_SECRET_<NAME>` (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** A provider to use instead of the ones named by `provider` (tests, custom stores). */
  readonly source?: SecretProvider;
  readonly clock?: Clock;
  readonly logger?: Pick<Logger, "warn">;
}

/** A secrets client. */
export interface SecretsClient {
  /** The raw bytes of a secret. */
  get(name: string): Promise<Uint8Array>;
  /** A secret as UTF-8 text. */
  getString(name: string): Promise<string>;
  /** A secret decoded by `decode` (e.g. a JSON schema check, a URL parser); decode errors are the caller's. */
  getAs<T>(name: string, decode: (value: Uint8Array) => T): Promise<T>;
  /** Drops one cached secret (or all) so the next read asks the providers. */
  invalidate(name?: string): void;
  /** Stops background refreshes. */
  close(): void;
}

interface Entry {
  value: Uint8Array;
  fetchedAt: number;
  /** Read since the last fetch: only secrets in use are refreshed in the background. */
  used: boolean;
  cancelRefresh: () => void;
}

/** Builds the provider chain that `KEYMESH_SECRETS_PROVIDER` names. */
export function providersFor(opts: Pick<SecretsClientOptions, "url" | "token" | "provider" | "env">): SecretProvider {
  const env = opts.env ?? process.env;
  const names = (opts.provider ?? env.KEYMESH_SECRETS_PROVIDER ?? (opts.url === undefined ? "env" : "env,vault"))
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const providers = names.map((n) => {
    if (n === "env") return createEnvProvider(env);
    if (n === "vault") {
      if (opts.url === undefined) throw new Error("KEYMESH_SECRETS_PROVIDER names the vault but no vault URL is set (KEYMESH_SECRETS_URL)");
      return createVaultProvider({ url: opts.url, ...(opts.token === undefined ? {} : { token: opts.token }) });
    }
    throw new Error(`KEYMESH_SECRETS_PROVIDER: unknown provider "${n}" (expected env, vault or env,vault)`);
  });
  return createProviderChain(providers);
}

/** Creates a secrets client. */
export function createSecretsClient(opts: SecretsClientOptions = {}): SecretsClient {
  const clock = opts.clock ?? systemClock;
  const ttl = opts.ttl ?? 300_000;
  const refresh = Math.min(opts.refresh ?? ttl / 5, ttl);
  const maxStale = opts.maxStale ?? ttl;
  const source = opts.source ?? providersFor(opts);
  const cache = new Map<string, Entry>();
  const inFlight = new Map<string, Promise<Uint8Array>>();
  let closed = false;

  function store(name: string, value: Uint8Array): void {
    cache.get(name)?.cancelRefresh();
    const entry: Entry = { value, fetchedAt: clock.now(), used: false, cancelRefresh: () => undefined };
    if (!closed) entry.cancelRefresh = clock.setTimeout(() => void backgroundRefresh(name, entry), ttl - refresh);
    cache.set(name, entry);
  }

  /** One fetch per name at a time; every concurrent reader shares it. */
  function fetch(name: string): Promise<Uint8Array> {
    let p = inFlight.get(name);
    if (p === undefined) {
      p = source
        .get(name)
        .then((value) => {
          if (value === undefined) {
            cache.get(name)?.cancelRefresh();
            cache.delete(name);
            throw new SecretNotFoundError(name);
          }
          store(name, value);
          return value;
        })
        .finally(() => inFlight.delete(name));
      inFlight.set(name, p);
    }
    return p;
  }

  async function backgroundRefresh(name: string, entry: Entry): Promise<void> {
    if (closed || cache.get(name) !== entry || !entry.used) return;
    try {
      await fetch(name);
    } catch (err) {
      if (err instanceof SecretNotFoundError) return;
      // The entry stays; reads serve it until expiry, then stale up to maxStale.
      opts.logger?.warn({ secret: name, err: String(err) }, "background refresh of a secret failed; serving the cached value");
    }
  }

  async function get(name: string): Promise<Uint8Array> {
    const entry = cache.get(name);
    const now = clock.now();
    if (entry !== undefined && now < entry.fetchedAt + ttl) {
      entry.used = true;
      return entry.value;
    }
    try {
      const value = await fetch(name);
      const fresh = cache.get(name);
      if (fresh !== undefined) fresh.used = true;
      return value;
    } catch (err) {
      const stale = cache.get(name);
      if (err instanceof SecretNotFoundError || stale === undefined || clock.now() >= stale.fetchedAt + ttl + maxStale) throw err;
      stale.used = true;
      opts.logger?.warn(
        { secret: name, err: String(err), staleMs: clock.now() - stale.fetchedAt - ttl },
        "secret providers unreachable; serving an expired cached value",
      );
      return stale.value;
    }
  }

  return {
    get,
    getString: async (name) => new TextDecoder().decode(await get(name)),
    getAs: async (name, decode) => decode(await get(name)),
    invalidate(name) {
      for (const [n, e] of cache) {
        if (name !== undefined && n !== name) continue;
        e.cancelRefresh();
        cache.delete(n);
      }
    },
    close() {
      closed = true;
      for (const e of cache.values()) e.cancelRefresh();
      source.close?.();
    },
  };
}
