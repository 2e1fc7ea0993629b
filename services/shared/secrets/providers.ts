import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VaultService } from "../../../gen/keymesh/vault/v1/vault_service_pb.js";

/**
 * Where secrets come from. A provider answers a name with its value, or `undefined` when it
 * does not have that secret (the chain then asks the next one); it throws when it cannot
 * answer (the vault is unreachable).
 */
export interface SecretProvider {
  readonly name: string;
  get(name: string): Promise<Uint8Array | undefined>;
  close?(): void;
}

/** The variable the env provider reads for `name`: `KEYMESH_SECRET_` + upper-cased name, other characters as `_`. */
export function envVariableFor(name: string): string {
  return `KEYMESH_SECRET_${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

/** Reads `KEYMESH_SECRET_<NAME>` from `env` (development, or secrets injected by the platform). */
export function createEnvProvider(env: Readonly<Record<string, string | undefined>> = process.env): SecretProvider {
  return {
    name: "env",
    async get(name) {
      const value = env[envVariableFor(name)];
      return value === undefined ? undefined : new TextEncoder().encode(value);
    },
  };
}

/** Options for `createVaultProvider`. */
export interface VaultProviderOptions {
  /** The vault's base URL, e.g. http://vault.internal:8080. */
  readonly url: string;
  /** A bearer token (a session or the service token). */
  readonly token?: string;
  /** Per-call deadline (default 5 s). */
  readonly timeoutMs?: number;
}

/** Reads the latest active version of a secret by name from the vault over gRPC. */
export function createVaultProvider(opts: VaultProviderOptions): SecretProvider {
  const auth: Interceptor = (next) => async (req) => {
    if (opts.token !== undefined) req.header.set("authorization", `Bearer ${opts.token}`);
    return next(req);
  };
  const client = createClient(VaultService, createGrpcTransport({ baseUrl: opts.url, interceptors: [auth] }));
  return {
    name: "vault",
    async get(name) {
      try {
        const res = await client.getSecret({ selector: { case: "name", value: name } }, { timeoutMs: opts.timeoutMs ?? 5_000 });
        return res.value;
      } catch (err) {
        if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
        throw err;
      }
    },
  };
}

/** Asks each provider in turn; the first that has the secret answers. */
export function createProviderChain(providers: readonly SecretProvider[]): SecretProvider {
  return {
    name: providers.map((p) => p.name).join(","),
    async get(name) {
      for (const p of providers) {
        const value = await p.get(name);
        if (value !== undefined) return value;
      }
      return undefined;
    },
    close() {
      for (const p of providers) p.close?.();
    },
  };
}
