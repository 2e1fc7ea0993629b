import { timingSafeEqual, createHash } from "node:crypto";
import { Code, ConnectError, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { principalKey, type Principal } from "../context.js";

/** Services that answer without credentials: probes and tooling must always work. */
export const OPEN_SERVICES: readonly string[] = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/** The principal every caller gets while user authentication is not enforced. */
export const DEVELOPMENT_PRINCIPAL: Principal = Object.freeze({
  kind: "development",
  userId: "dev",
  username: "developer",
});

/** Options for `createAuthInterceptor`. */
export interface AuthInterceptorOptions {
  /** `KEYMESH_SERVICE_TOKEN`: a matching bearer token makes the caller a service principal. */
  readonly serviceToken?: string;
  /**
   * Resolves any other bearer token (a user session) to a principal; return undefined for an
   * unknown token, which is then refused with Unauthenticated. Unset: such tokens are ignored
   * and the caller falls back to `fallback`.
   */
  readonly authenticate?: (token: string, req: UnaryRequest | StreamRequest) => Promise<Principal | undefined>;
  /**
   * The principal of callers without usable credentials; undefined means they are refused
   * with Unauthenticated. Default: the development principal.
   */
  readonly fallback?: Principal;
  /** Full service names that skip authentication (default `OPEN_SERVICES`). */
  readonly openServices?: readonly string[];
}

/** The bearer token of an `authorization` header, if any. */
export function bearerToken(header: Headers): string | undefined {
  const value = header.get("authorization");
  if (value === null) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return match?.[1];
}

function sameSecret(a: string, b: string): boolean {
  // Hash first so the comparison takes the same time whatever the lengths.
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

/**
 * Creates the server interceptor that decides who is calling and stores it in the
 * `principalKey` context value: the service token gives `{ kind: "service" }`, a token
 * `authenticate` accepts gives its principal, anything else the fallback (the development
 * principal for now). Health and reflection stay open.
 */
export function createAuthInterceptor(opts: AuthInterceptorOptions = {}): Interceptor {
  const open = new Set(opts.openServices ?? OPEN_SERVICES);
  const fallback = "fallback" in opts ? opts.fallback : DEVELOPMENT_PRINCIPAL;
  return (next) => async (req) => {
    if (open.has(req.service.typeName)) {
      req.contextValues.set(principalKey, { kind: "anonymous" });
      return next(req);
    }
    const token = bearerToken(req.header);
    let principal: Principal | undefined;
    if (token !== undefined && opts.serviceToken !== undefined && sameSecret(token, opts.serviceToken)) {
      principal = { kind: "service", name: req.header.get("x-keymesh-caller") ?? "keymesh" };
    } else if (token !== undefined && opts.authenticate !== undefined) {
      principal = await opts.authenticate(token, req);
      if (principal === undefined) throw new ConnectError("the credentials are invalid or expired", Code.Unauthenticated);
    } else {
      principal = fallback;
    }
    if (principal === undefined) throw new ConnectError("this call needs credentials", Code.Unauthenticated);
    req.contextValues.set(principalKey, principal);
    return next(req);
  };
}
