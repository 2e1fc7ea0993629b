import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AuthService, PrincipalKind } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { peerAddressKey, principalKey } from "../shared/context.js";
import { InvalidInputError, mapErrors } from "../shared/errors.js";
import { bearerToken } from "../shared/interceptors/access.js";
import { TooManyFailuresError, type Accounts } from "./accounts.js";

/** The header carrying the retry delay of a rate-limited login, in whole seconds (as HTTP's). */
export const RETRY_AFTER_HEADER = "retry-after";

/** Answers a rate-limited login with ResourceExhausted and when to try again. */
function withRetryDelay<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    try {
      return await fn(...args);
    } catch (err) {
      if (!(err instanceof TooManyFailuresError)) throw err;
      const metadata = new Headers({ [RETRY_AFTER_HEADER]: String(Math.ceil(err.retryAfterMs / 1000)) });
      throw new ConnectError(err.message, Code.ResourceExhausted, metadata);
    }
  };
}

function sessionToken(ctx: HandlerContext): string {
  const token = bearerToken(ctx.requestHeader);
  if (token === undefined) throw new InvalidInputError("no session token in the call");
  return token;
}

/** AuthService: thin mapping between the protos and `Accounts`. */
export function createAuthHandler(accounts: Accounts): ServiceImpl<typeof AuthService> {
  return {
    register: mapErrors(async (req) => accounts.register(req.username, req.password)),

    login: mapErrors(
      withRetryDelay(async (req, ctx) => {
        const session = await accounts.login(req.username, req.password, ctx.values.get(peerAddressKey), req.ttlSeconds * 1000);
        return { token: session.token, expiresAtMs: BigInt(session.expiresAt), userId: session.userId };
      }),
    ),

    logout: mapErrors(async (_req, ctx) => {
      const principal = ctx.values.get(principalKey);
      if (principal.kind !== "user" || !(await accounts.logout(sessionToken(ctx)))) {
        throw new InvalidInputError("only a session token from `Login` can be logged out");
      }
      return {};
    }),

    whoAmI: mapErrors(async (_req, ctx) => {
      const principal = ctx.values.get(principalKey);
      if (principal.kind === "service") return { principalId: principal.name, kind: PrincipalKind.SERVICE };
      if (principal.kind !== "user") throw new ConnectError("no credentials", Code.Unauthenticated);
      const session = await accounts.resolve(sessionToken(ctx));
      return {
        principalId: principal.userId,
        username: principal.username,
        kind: PrincipalKind.USER,
        admin: principal.admin,
        expiresAtMs: BigInt(session?.expiresAt ?? 0),
      };
    }),
  };
}
