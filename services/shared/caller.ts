import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { principalKey } from "./context.js";

/**
 * The checks handlers make on the principal the access interceptor put in the context. The
 * interceptor already refuses callers a method's access level excludes; these narrow the
 * principal to what the handler needs, and keep a handler safe if it is ever served without
 * that interceptor.
 */

/** The logged-in user behind a call. */
export interface CallerUser {
  readonly userId: string;
  readonly username: string;
}

/** The calling user; Unauthenticated for anonymous callers, PermissionDenied for services. */
export function requireUser(ctx: Pick<HandlerContext, "values">): CallerUser {
  const p = ctx.values.get(principalKey);
  if (p.kind !== "anonymous" && "userId" in p) return { userId: p.userId, username: p.username };
  if (p.kind === "service") throw new ConnectError("this call acts for a user; log in with `keymesh login`", Code.PermissionDenied);
  throw new ConnectError("this call needs a logged-in user; run `keymesh login`", Code.Unauthenticated);
}

/** The calling keymesh service's name; PermissionDenied for anyone else. */
export function requireServiceCaller(ctx: Pick<HandlerContext, "values">): string {
  const p = ctx.values.get(principalKey);
  if (p.kind === "service") return p.name;
  throw new ConnectError("this call is reserved for keymesh services", Code.PermissionDenied);
}

/** Refuses anonymous callers (Unauthenticated); users and services pass. */
export function requireAuthenticated(ctx: Pick<HandlerContext, "values">): void {
  if (ctx.values.get(principalKey).kind === "anonymous") {
    throw new ConnectError("this call needs credentials; run `keymesh login`", Code.Unauthenticated);
  }
}
