import { createHash, timingSafeEqual } from "node:crypto";
import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { access as accessOption, Access } from "../../../gen/keymesh/auth/v1/access_pb.js";
import { principalKey, type Principal } from "../context.js";

/**
 * The one access policy of the mesh, enforced on every server. Each RPC declares who may call
 * it with the `(keymesh.auth.v1.access)` method option in its .proto file; this interceptor
 * reads the option from the generated method descriptor, works out who the caller is from the
 * `authorization: Bearer <token>` header and refuses what the policy does not allow:
 * no or bad credentials → Unauthenticated, the wrong kind of caller → PermissionDenied.
 */

/** Vendored upstream services (their contracts carry no keymesh option): always public. */
export const OPEN_SERVICES: readonly string[] = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/** The principal the development root token stands for: an admin user named "root". */
export const ROOT_PRINCIPAL: Principal = Object.freeze({ kind: "user", userId: "root", username: "root", admin: true });

/** The header naming the calling service on service-to-service calls (a label, not a credential). */
export const CALLER_HEADER = "x-keymesh-caller";

/** The declared access of a method (UNSPECIFIED when it declares none). */
export function accessOf(method: DescMethod): Access {
  if (OPEN_SERVICES.includes(method.parent.typeName)) return Access.PUBLIC;
  return getOption(method, accessOption);
}

/** Who may present which credential. */
export interface AccessInterceptorOptions {
  /**
   * Tokens that identify keymesh services: `KEYMESH_SERVICE_TOKEN`, or the secret a process
   * generates for calls to itself when none is configured.
   */
  readonly serviceTokens: readonly string[];
  /** The development root token (an admin), when `keymesh serve --dev` made one. */
  readonly rootToken?: string;
  /**
   * Resolves a session token to its user; undefined for an unknown, expired or revoked
   * token. Throws (e.g. Unavailable) when the sessions cannot be checked right now.
   */
  readonly authenticate: (token: string) => Promise<Principal | undefined>;
}

/** The bearer token of an `authorization` header, if any. */
export function bearerToken(header: Headers): string | undefined {
  const value = header.get("authorization");
  if (value === null) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return match?.[1];
}

function digest(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

/**
 * Compares a presented token with a known secret in constant time: both are hashed first, so
 * neither the content nor the length of the secret shows in the timing.
 */
export function sameSecret(presented: string, known: string): boolean {
  return timingSafeEqual(digest(presented), digest(known));
}

function matchesAny(token: string, secrets: readonly string[]): boolean {
  let found = false;
  // Compare with every secret (no early exit) so the position of a match does not show.
  for (const secret of secrets) found = sameSecret(token, secret) || found;
  return found;
}

const NO_CREDENTIALS = "this call needs credentials: send `authorization: Bearer <token>` (log in with `keymesh login`)";
const BAD_CREDENTIALS = "the credentials are invalid, expired or revoked";

/** Creates the server interceptor that identifies the caller and enforces each method's access. */
export function createAccessInterceptor(opts: AccessInterceptorOptions): Interceptor {
  const identify = async (header: Headers): Promise<Principal> => {
    const token = bearerToken(header);
    if (token === undefined) {
      if (header.has("authorization")) throw new ConnectError("the authorization header must be `Bearer <token>`", Code.Unauthenticated);
      return { kind: "anonymous" };
    }
    if (matchesAny(token, opts.serviceTokens)) return { kind: "service", name: header.get(CALLER_HEADER) ?? "keymesh" };
    if (opts.rootToken !== undefined && sameSecret(token, opts.rootToken)) return ROOT_PRINCIPAL;
    const user = await opts.authenticate(token);
    if (user === undefined) throw new ConnectError(BAD_CREDENTIALS, Code.Unauthenticated);
    return user;
  };

  return (next) => async (req) => {
    const access = accessOf(req.method);
    if (access === Access.PUBLIC) {
      req.contextValues.set(principalKey, { kind: "anonymous" });
      return next(req);
    }
    const name = `${req.service.typeName}/${req.method.name}`;
    if (access === Access.UNSPECIFIED) {
      throw new ConnectError(`${name} declares no access policy, so nobody may call it`, Code.PermissionDenied);
    }
    const principal = await identify(req.header);
    if (principal.kind === "anonymous") throw new ConnectError(NO_CREDENTIALS, Code.Unauthenticated);
    if (access === Access.SERVICE && principal.kind !== "service") {
      throw new ConnectError(`${name} is reserved for keymesh services`, Code.PermissionDenied);
    }
    if (access === Access.ADMIN && !(principal.kind === "user" && principal.admin)) {
      throw new ConnectError(`${name} needs the admin role (granted with \`keymesh admin grant <user>\`)`, Code.PermissionDenied);
    }
    req.contextValues.set(principalKey, principal);
    return next(req);
  };
}
