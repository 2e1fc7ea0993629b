import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { createClientTracingInterceptor } from "../services/shared/telemetry/interceptors.js";
import { resolveToken } from "./credentials.js";

type Env = Readonly<Record<string, string | undefined>>;

/** The mesh address the CLI talks to: --url, then KEYMESH_URL, then the local default. */
export function meshUrl(flag: string | undefined, env: Env = process.env): string {
  return flag ?? env.KEYMESH_URL ?? "http://127.0.0.1:8080";
}

/** Options shared by every command that calls the mesh. */
export const CLIENT_OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
} as const;

/** Help lines for `CLIENT_OPTIONS`. */
export const CLIENT_USAGE = `  --url URL          the mesh (default $KEYMESH_URL or http://127.0.0.1:8080)
  --token TOKEN      credentials (default $KEYMESH_TOKEN, then the session of \`keymesh login\`,
                     then the development root token of a local \`npm start\`)`;

/**
 * Generated clients over gRPC (HTTP/2) to one mesh address, with trace propagation, sending
 * `token` as `authorization: Bearer …` when given. https:// URLs are checked against the
 * system CAs plus `KEYMESH_TLS_CA`.
 */
export function connectTo(url: string, token?: string, env: Env = process.env) {
  const interceptors: Interceptor[] = [createClientTracingInterceptor()];
  if (token !== undefined) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const ca = env.KEYMESH_TLS_CA;
  const nodeOptions = ca !== undefined && ca !== "" ? { ca: [...rootCertificates, readFileSync(ca, "utf8")] } : {};
  // Records and signatures are random bytes: asking the server to gzip them only costs CPU.
  const transport = createGrpcTransport({ baseUrl: url, interceptors, acceptCompression: [], nodeOptions });
  return <S extends DescService>(desc: S): Client<S> => createClient(desc, transport);
}

/** Clients for the mesh named by `--url`, with the credentials `--token` and friends give. */
export function connectFromFlags(values: { url?: string | undefined; token?: string | undefined }, env: Env) {
  const url = meshUrl(values.url, env);
  return { url, client: connectTo(url, resolveToken(values.token, env, url), env) };
}
