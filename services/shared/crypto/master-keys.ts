import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { createMasterKeyring, type MasterKeyring } from "./envelope.js";

/** File in the data directory holding development master keys (mode 0600, git-ignored). */
export const DEV_MASTER_KEYS_FILE = "master-keys.json";

/** A master-key specification that cannot be used; the message names the problem, never the key. */
export class MasterKeyConfigError extends Error {
  override readonly name = "MasterKeyConfigError";
}

/**
 * Parses `KEYMESH_MASTER_KEYS`: comma-separated `version:base64key` entries, each key exactly
 * 32 bytes. The highest version is primary; lower versions keep decrypting until rewrapped.
 */
export function parseMasterKeys(spec: string): MasterKeyring {
  const keys = new Map<number, Buffer>();
  for (const [index, raw] of spec.split(",").entries()) {
    const entry = raw.trim();
    const match = /^(\d{1,10}):([A-Za-z0-9+/_-]+={0,2})$/.exec(entry);
    if (!match) {
      throw new MasterKeyConfigError(`KEYMESH_MASTER_KEYS entry ${index + 1} is not "version:base64key"`);
    }
    const version = Number(match[1]);
    const key = Buffer.from(match[2]!, "base64");
    if (version < 1 || version > 0xffffffff) {
      throw new MasterKeyConfigError(`KEYMESH_MASTER_KEYS entry ${index + 1}: version must be 1..4294967295`);
    }
    if (key.length !== 32) {
      throw new MasterKeyConfigError(
        `KEYMESH_MASTER_KEYS entry ${index + 1} (version ${version}): key decodes to ${key.length} bytes, expected 32`,
      );
    }
    if (keys.has(version)) throw new MasterKeyConfigError(`KEYMESH_MASTER_KEYS lists version ${version} twice`);
    keys.set(version, key);
  }
  if (keys.size === 0) throw new MasterKeyConfigError("KEYMESH_MASTER_KEYS is empty");
  return createMasterKeyring(keys, Math.max(...keys.keys()));
}

/** Where `loadMasterKeyring` says that development keys are in use. */
export type MasterKeyLogger = Pick<Logger, "info" | "warn">;

/** Files this process has already said it uses: two services load the same ring. */
const announced = new Set<string>();

/**
 * Loads the master keyring: from `KEYMESH_MASTER_KEYS` when set, otherwise from the
 * development key file in the data directory, generated at first start. Several processes
 * starting at once agree on one file (exclusive create, then read). With a logger, using
 * development keys is logged once per process: a warning with the file when they are
 * generated, an info line when they are read.
 */
export function loadMasterKeyring(opts: { spec?: string; dataDir: string; logger?: MasterKeyLogger }): MasterKeyring {
  if (opts.spec !== undefined && opts.spec !== "") return parseMasterKeys(opts.spec);
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const file = resolve(opts.dataDir, DEV_MASTER_KEYS_FILE);
  const fresh = JSON.stringify({ keys: { "1": randomBytes(32).toString("base64") } }, null, 2);
  let generated = false;
  try {
    writeFileSync(file, fresh, { flag: "wx", mode: 0o600 });
    generated = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const ring = readDevKeys(file);
  if (opts.logger !== undefined && !announced.has(file)) {
    announced.add(file);
    const fields = { file, hint: "for production set KEYMESH_MASTER_KEYS (version:base64key, 32-byte keys)" };
    if (generated) opts.logger.warn(fields, "generated development master keys: for development only, never for production data");
    else opts.logger.info(fields, "using development master keys: for development only");
  }
  return ring;
}

function readDevKeys(file: string): MasterKeyring {
  for (let attempt = 0; ; attempt++) {
    const text = readFileSync(file, "utf8");
    // Another process may have created the file a moment ago and not written it yet.
    if (text.trim() === "" && attempt < 50) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      continue;
    }
    let parsed: { keys?: Record<string, string> };
    try {
      parsed = JSON.parse(text) as { keys?: Record<string, string> };
    } catch {
      throw new MasterKeyConfigError(`${file} is not valid JSON; restore it or remove it to start over`);
    }
    const entries = Object.entries(parsed.keys ?? {}).map(([v, k]) => `${v}:${k}`);
    return parseMasterKeys(entries.join(","));
  }
}

/**
 * Adds a new development master-key version to the data directory's key file and returns it
 * (`RotateMasterKey` without KEYMESH_MASTER_KEYS). Development only: production keys come
 * from configuration.
 */
export function addDevMasterKey(dataDir: string): number {
  const file = join(dataDir, DEV_MASTER_KEYS_FILE);
  const parsed = JSON.parse(readFileSync(file, "utf8")) as { keys: Record<string, string> };
  const next = Math.max(0, ...Object.keys(parsed.keys).map(Number)) + 1;
  parsed.keys[String(next)] = randomBytes(32).toString("base64");
  writeFileSync(file, JSON.stringify(parsed, null, 2), { mode: 0o600 });
  return next;
}
