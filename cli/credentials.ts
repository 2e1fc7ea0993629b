import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { readRootToken } from "../services/shared/root-token.js";

/**
 * Where the CLI's credentials come from, first match wins: `--token`, `KEYMESH_TOKEN`, the
 * session `keymesh login` stored for the mesh's URL (in the user's config directory, mode
 * 0600), and for a mesh on this machine the development root token that `npm start` wrote
 * into the data directory.
 */

type Env = Readonly<Record<string, string | undefined>>;

/** A stored login. */
export interface StoredSession {
  readonly token: string;
  readonly username: string;
  readonly expiresAtMs: number;
}

interface CredentialsFile {
  /** Sessions by mesh URL. */
  sessions: Record<string, StoredSession>;
}

/** `$XDG_CONFIG_HOME/keymesh`, default `~/.config/keymesh`. */
export function configDir(env: Env): string {
  return join(env.XDG_CONFIG_HOME ?? join(env.HOME ?? homedir(), ".config"), "keymesh");
}

/** The credentials file. */
export function credentialsPath(env: Env): string {
  return join(configDir(env), "credentials.json");
}

function load(env: Env): CredentialsFile {
  try {
    const parsed = JSON.parse(readFileSync(credentialsPath(env), "utf8")) as Partial<CredentialsFile>;
    return { sessions: parsed.sessions ?? {} };
  } catch {
    return { sessions: {} };
  }
}

function save(env: Env, file: CredentialsFile): void {
  mkdirSync(configDir(env), { recursive: true, mode: 0o700 });
  const path = credentialsPath(env);
  // Written private from the start, then renamed over the old file: never readable by others.
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  renameSync(temp, path);
}

/** The session stored for a mesh URL, if it has not expired. */
export function storedSession(env: Env, url: string, now = Date.now()): StoredSession | undefined {
  const session = load(env).sessions[url];
  return session !== undefined && session.expiresAtMs > now ? session : undefined;
}

/** Stores the session for a mesh URL. */
export function storeSession(env: Env, url: string, session: StoredSession): void {
  const file = load(env);
  file.sessions[url] = session;
  save(env, file);
}

/** Forgets the session of a mesh URL; false when there was none. */
export function forgetSession(env: Env, url: string): boolean {
  const file = load(env);
  if (!(url in file.sessions)) return false;
  delete file.sessions[url];
  save(env, file);
  return true;
}

function isLoopback(url: string): boolean {
  try {
    const host = new URL(url).hostname;
    return host === "localhost" || host === "[::1]" || host.startsWith("127.");
  } catch {
    return false;
  }
}

/** The token to call `url` with, or undefined to call without credentials. */
export function resolveToken(flag: string | undefined, env: Env, url: string): string | undefined {
  if (flag !== undefined && flag !== "") return flag;
  if (env.KEYMESH_TOKEN !== undefined && env.KEYMESH_TOKEN !== "") return env.KEYMESH_TOKEN;
  const stored = storedSession(env, url);
  if (stored !== undefined) return stored.token;
  // The root token only ever goes to a mesh on this machine.
  return isLoopback(url) ? readRootToken(env.KEYMESH_DATA_DIR ?? "./data") : undefined;
}
