import { createContextKey } from "@connectrpc/connect";

/**
 * Per-request values that interceptors set and handlers read through `ctx.values`.
 * Handlers never parse headers for these themselves.
 */

/** Who is calling. */
export type Principal =
  /** No credentials were presented (or none were needed). */
  | { readonly kind: "anonymous" }
  /** Development mode: every caller acts as one local developer. */
  | { readonly kind: "development"; readonly userId: string; readonly username: string }
  /** A logged-in user (set by the auth interceptor once sessions exist). */
  | { readonly kind: "user"; readonly userId: string; readonly username: string }
  /** Another keymesh service, authenticated by the shared service token. */
  | { readonly kind: "service"; readonly name: string };

/** The principal of the current call; anonymous unless the auth interceptor set one. */
export const principalKey = createContextKey<Principal>({ kind: "anonymous" }, { description: "keymesh principal" });

/** The request id of the current call (from `x-request-id`, or generated). */
export const requestIdKey = createContextKey<string>("", { description: "keymesh request id" });

/** The header carrying request ids in and out. */
export const REQUEST_ID_HEADER = "x-request-id";
