import type { Interceptor } from "@connectrpc/connect";
import { principalKey, type Principal } from "../../services/shared/context.js";

/**
 * Test-only identity: a server interceptor that takes the caller's principal from the
 * `x-test-principal` header ("user:<id>", "admin:<id>", "service:<name>", "anonymous").
 * It stands in for the auth service's sessions in vault tests; replace it with real logins
 * once they exist (one place: here).
 */
export const TEST_PRINCIPAL_HEADER = "x-test-principal";

export function parseTestPrincipal(value: string): Principal {
  const [kind, id = ""] = value.split(":", 2);
  if (kind === "service") return { kind: "service", name: id };
  if (kind === "anonymous") return { kind: "anonymous" };
  // `admin` is the field the auth work adds to user principals; set structurally so this
  // compiles before and after that change.
  return { kind: "user", userId: id, username: id, admin: kind === "admin" } as unknown as Principal;
}

export function createTestPrincipalInterceptor(): Interceptor {
  return (next) => async (req) => {
    const value = req.header.get(TEST_PRINCIPAL_HEADER);
    if (value !== null) req.contextValues.set(principalKey, parseTestPrincipal(value));
    return next(req);
  };
}

/** A client interceptor that sends `principal` in the test header. */
export function asPrincipal(principal: string): Interceptor {
  return (next) => async (req) => {
    req.header.set(TEST_PRINCIPAL_HEADER, principal);
    return next(req);
  };
}
