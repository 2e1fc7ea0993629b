import { Redis } from "ioredis";
import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { mapErrors } from "../shared/errors.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { createAccounts } from "./accounts.js";
import { createAuthHandler } from "./handler.js";
import { authMigrations } from "./migrations/index.js";
import { createMemoryFailureCounter, createRedisFailureCounter, type LimitRule } from "./login-limits.js";
import type { ScryptCost } from "./passwords.js";
import { createDatabaseSessionStore, createRedisSessionStore } from "./sessions.js";
import { createUserStore } from "./user-store.js";

/** Knobs of the auth service (tests tighten the limits). */
export interface AuthModuleOptions {
  readonly limits?: { readonly username: LimitRule; readonly peer: LimitRule };
  readonly cost?: ScryptCost;
}

/**
 * AuthService as the host runs it: users in the database; sessions and failed-login counters
 * in Redis when `KEYMESH_REDIS_URL` is set (its first URL: these are plain keys, not locks, so
 * a Redlock quorum's other nodes are not needed), in the database and in memory otherwise.
 */
export function createAuthModule(opts: AuthModuleOptions = {}): ServiceModule {
  return {
    name: "auth",
    desc: AuthService,
    migrations: authMigrations,
    needs: { database: true },
    async register(router, ctx) {
      const url = ctx.config.redisUrls[0];
      const redis = url === undefined ? undefined : new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 5_000, lazyConnect: true });
      redis?.on("error", (err: Error) => ctx.logger.warn({ err: err.message }, "redis connection error"));
      const prefix = ctx.config.redisPrefix;
      const accounts = createAccounts({
        users: createUserStore(ctx.db),
        sessions: redis === undefined ? createDatabaseSessionStore(ctx.db) : createRedisSessionStore(redis, prefix),
        failures: redis === undefined ? createMemoryFailureCounter() : createRedisFailureCounter(redis, prefix),
        ...(opts.limits === undefined ? {} : { limits: opts.limits }),
        ...(opts.cost === undefined ? {} : { cost: opts.cost }),
      });
      router.service(AuthService, createAuthHandler(accounts));
      return {
        authenticate: mapErrors(async (token: string) => (await accounts.resolve(token))?.principal),
        async close() {
          redis?.disconnect();
        },
      };
    },
  };
}

/** The auth service with its default limits. */
export const authModule: ServiceModule = createAuthModule();
