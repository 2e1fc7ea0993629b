import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import type { Principal } from "../shared/context.js";
import { DomainError, InvalidInputError } from "../shared/errors.js";
import { DEFAULT_LIMITS, type FailureCounter, type LimitRule } from "./login-limits.js";
import { DEFAULT_COST, hashPassword, verifyPassword, type ScryptCost } from "./passwords.js";
import type { SessionStore } from "./sessions.js";
import type { UserStore } from "./user-store.js";

/**
 * Users and sessions: registration rules, password checks that take the same time whether or
 * not the user exists, failed-login limits per username and peer, and opaque session tokens
 * of which only a hash is ever stored.
 */

/** Usernames: 3-64 characters of lowercase letters, digits, '.', '_' and '-'. */
export const USERNAME_PATTERN = /^[a-z0-9._-]{3,64}$/;
export const MIN_PASSWORD_BYTES = 12;
export const MAX_PASSWORD_BYTES = 1024;
/** Session lifetime when the caller asks for none, and the longest one granted. */
export const DEFAULT_SESSION_TTL_MS = 12 * 3600_000;
export const MAX_SESSION_TTL_MS = 30 * 24 * 3600_000;
/** Session tokens: a recognisable prefix (secret scanners) and 256 random bits. */
const TOKEN_PREFIX = "kmt_";

/** Login refused because of too many failures; `retryAfterMs` says when to try again. */
export class TooManyFailuresError extends DomainError {
  constructor(readonly retryAfterMs: number) {
    super(Code.ResourceExhausted, `too many failed logins; try again in ${Math.ceil(retryAfterMs / 1000)} s`);
  }
}

/** The one answer for an unknown user and a wrong password alike. */
export class BadCredentialsError extends DomainError {
  constructor() {
    super(Code.Unauthenticated, "wrong username or password");
  }
}

/** What `createAccounts` needs. */
export interface AccountsOptions {
  readonly users: UserStore;
  readonly sessions: SessionStore;
  readonly failures: FailureCounter;
  readonly limits?: { readonly username: LimitRule; readonly peer: LimitRule };
  readonly cost?: ScryptCost;
  readonly now?: () => number;
}

/** A newly issued session. */
export interface IssuedSession {
  readonly token: string;
  readonly expiresAt: number;
  readonly userId: string;
}

/** The users and sessions of the auth service. */
export interface Accounts {
  register(username: string, password: string): Promise<{ userId: string; username: string }>;
  login(username: string, password: string, peer: string, ttlMs?: number): Promise<IssuedSession>;
  /** Revokes the session of `token`; false when it was not a live session. */
  logout(token: string): Promise<boolean>;
  /** The user behind a session token and when the session ends; undefined when it is not live. */
  resolve(token: string): Promise<{ principal: Principal & { kind: "user" }; expiresAt: number } | undefined>;
}

/** The SHA-256 (hex) under which a token is stored. */
export function tokenHash(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

function checkPassword(password: string): void {
  const bytes = Buffer.byteLength(password, "utf8");
  if (bytes < MIN_PASSWORD_BYTES) throw new InvalidInputError(`the password must be at least ${MIN_PASSWORD_BYTES} bytes long`);
  if (bytes > MAX_PASSWORD_BYTES) throw new InvalidInputError(`the password must be at most ${MAX_PASSWORD_BYTES} bytes long`);
}

/** Creates the accounts domain over its stores. */
export function createAccounts(opts: AccountsOptions): Accounts {
  const now = opts.now ?? Date.now;
  const cost = opts.cost ?? DEFAULT_COST;
  const limits = opts.limits ?? DEFAULT_LIMITS;
  // Checked instead of a real hash when the user does not exist, so both cases cost one
  // scrypt of the same parameters.
  const decoy = hashPassword(randomBytes(16).toString("hex"), cost);

  const limited = async (keys: readonly [string, LimitRule][]) => {
    let wait = 0;
    for (const [key, rule] of keys) {
      const { count, remainingMs } = await opts.failures.read(key, now());
      if (count >= rule.maxFailures) wait = Math.max(wait, remainingMs);
    }
    if (wait > 0) throw new TooManyFailuresError(wait);
  };

  return {
    async register(username, password) {
      if (!USERNAME_PATTERN.test(username)) {
        throw new InvalidInputError("the username must be 3-64 characters of lowercase letters, digits, '.', '_' and '-'");
      }
      checkPassword(password);
      const id = randomUUID();
      const inserted = await opts.users.insert({ id, username, passwordHash: await hashPassword(password, cost), admin: false, createdAt: now() });
      if (!inserted) throw new DomainError(Code.AlreadyExists, `the username "${username}" is taken`);
      return { userId: id, username };
    },

    async login(username, password, peer, ttlMs = 0) {
      if (Buffer.byteLength(password, "utf8") > MAX_PASSWORD_BYTES) throw new InvalidInputError(`the password must be at most ${MAX_PASSWORD_BYTES} bytes long`);
      const keys: [string, LimitRule][] = [[`user:${username.toLowerCase().slice(0, 64)}`, limits.username]];
      if (peer !== "") keys.push([`peer:${peer}`, limits.peer]);
      await limited(keys);
      const user = USERNAME_PATTERN.test(username) ? await opts.users.byUsername(username) : undefined;
      const ok = await verifyPassword(password, user?.passwordHash ?? (await decoy));
      if (user === undefined || !ok) {
        for (const [key, rule] of keys) await opts.failures.add(key, rule.windowMs, now());
        throw new BadCredentialsError();
      }
      await opts.failures.clear(keys[0]![0]);
      const token = TOKEN_PREFIX + randomBytes(32).toString("base64url");
      const issuedAt = now();
      const ttl = ttlMs > 0 ? Math.min(ttlMs, MAX_SESSION_TTL_MS) : DEFAULT_SESSION_TTL_MS;
      const expiresAt = issuedAt + ttl;
      await opts.sessions.put(tokenHash(token), { userId: user.id, expiresAt }, issuedAt);
      return { token, expiresAt, userId: user.id };
    },

    async logout(token) {
      return opts.sessions.revoke(tokenHash(token));
    },

    async resolve(token) {
      if (!token.startsWith(TOKEN_PREFIX)) return undefined;
      const session = await opts.sessions.get(tokenHash(token), now());
      if (session === undefined) return undefined;
      const user = await opts.users.byId(session.userId);
      if (user === undefined) return undefined;
      return { principal: { kind: "user", userId: user.id, username: user.username, admin: user.admin }, expiresAt: session.expiresAt };
    },
  };
}
