import { randomBytes } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The development root token, like Vault's dev server's: `keymesh serve --dev` (what
 * `npm start` runs) makes one in the data directory, mode 0600, and accepts it as an admin;
 * the CLI on the same machine finds it there. Production processes run without `--dev` and
 * never accept it: their first admin is granted with `keymesh admin grant <user>`.
 */

/** The file name in the data directory. */
export const ROOT_TOKEN_FILE = "root-token";

/** The root token file of a data directory. */
export function rootTokenPath(dataDir: string): string {
  return join(dataDir, ROOT_TOKEN_FILE);
}

/** Reads a data directory's root token, or undefined when there is none. */
export function readRootToken(dataDir: string): string | undefined {
  try {
    const token = readFileSync(rootTokenPath(dataDir), "utf8").trim();
    return token === "" ? undefined : token;
  } catch {
    return undefined;
  }
}

/**
 * Returns the data directory's root token, creating it first if needed. Several processes
 * starting at once agree on one token: it is written to a temporary file and linked into
 * place, which fails for all but the first.
 */
export function ensureRootToken(dataDir: string): { token: string; created: boolean; path: string } {
  const path = rootTokenPath(dataDir);
  const existing = readRootToken(dataDir);
  if (existing !== undefined) return { token: existing, created: false, path };
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}`;
  writeFileSync(temp, `kmr_${randomBytes(32).toString("base64url")}\n`, { mode: 0o600, flag: "wx" });
  let created = true;
  try {
    linkSync(temp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    created = false;
  } finally {
    rmSync(temp, { force: true });
  }
  const token = readRootToken(dataDir);
  if (token === undefined) throw new Error(`cannot read the root token at ${path}`);
  return { token, created, path };
}
