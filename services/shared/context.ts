import { createContextKey } from "@connectrpc/connect";

/**
 * Per-request values that interceptors set and handlers read through `ctx.values`.
 * Handlers never parse headers for these themselves.
 */

/** Who is calling (set by the access interceptor, services/shared/interceptors/access.ts). */
export type Principal =
  /** No credentials were presented (only public methods get this far). */
  | { readonly kind: "anonymous" }
  /** A logged-in user (a session token) or the development root token (an admin). */
  | { readonly kind: "user"; readonly userId: string; readonly username: string; readonly admin: boolean }
  /** Another keymesh service, authenticated by the service token. */
  | { readonly kind: "service"; readonly name: string };

/** The principal of the current call; anonymous unless the auth interceptor set one. */
export const principalKey = createContextKey<Principal>({ kind: "anonymous" }, { description: "keymesh principal" });

/**
 * The network address of the caller's connection (e.g. "127.0.0.1"), set by the host's
 * request handler; "" when unknown (in-memory transports). Failed logins are rate-limited
 * per peer by it.
 */
export const peerAddressKey = createContextKey<string>("", { description: "keymesh peer address" });

/** The request id of the current call (from `x-request-id`, or generated). */
export const requestIdKey = createContextKey<string>("", { description: "keymesh request id" });

/** The header carrying request ids in and out. */
export const REQUEST_ID_HEADER = "x-request-id";
