import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** File in the data directory holding the development audit HMAC key (mode 0600). */
export const DEV_AUDIT_KEY_FILE = "audit-key";

/**
 * The key object ids are HMACed with in the audit trail: `KEYMESH_AUDIT_KEY` (base64 of 32
 * bytes, the same for every process of a mesh, validated by config) or, in development, a
 * key generated once into the data directory. It is not a master key and never rotates with
 * them: rotating it would make old events unsearchable by id.
 */
export function loadAuditKey(opts: { spec?: string | undefined; dataDir: string }): Buffer {
  if (opts.spec !== undefined && opts.spec !== "") return Buffer.from(opts.spec, "base64");
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const file = join(opts.dataDir, DEV_AUDIT_KEY_FILE);
  try {
    writeFileSync(file, randomBytes(32).toString("base64"), { flag: "wx", mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  for (let attempt = 0; ; attempt++) {
    const key = Buffer.from(readFileSync(file, "utf8").trim(), "base64");
    if (key.length === 32) return key;
    // Another process created the file a moment ago and has not written it yet.
    if (attempt >= 50) throw new Error(`${file} does not hold a base64 32-byte key; remove it to start over`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}
