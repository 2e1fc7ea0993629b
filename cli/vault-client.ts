import { readFile } from "node:fs/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import type { CommandIO } from "./command.js";
import { connectFromFlags } from "./connect.js";

/** Helpers shared by `keymesh secrets`, `keymesh vault` and `keymesh audit`. */

/** A VaultService client for the mesh at --url / KEYMESH_URL, with the CLI's credentials. */
export function vaultClient(values: { url?: string | undefined; token?: string | undefined }, io: CommandIO) {
  return connectFromFlags(values, io.env).client(VaultService);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A secret named on the command line: a UUID is an id, anything else a name. */
export function selectorOf(nameOrId: string): { case: "secretId"; value: string } | { case: "name"; value: string } {
  return UUID.test(nameOrId) ? { case: "secretId", value: nameOrId } : { case: "name", value: nameOrId };
}

/** Reads a whole stream (a value piped on stdin). */
export async function readAll(stream: NodeJS.ReadableStream): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** The stdin of a command (tests pass their own). */
export function stdinOf(io: CommandIO): NodeJS.ReadableStream & { isTTY?: boolean } {
  return (io as CommandIO & { stdin?: NodeJS.ReadableStream }).stdin ?? process.stdin;
}

/** Reads a file's bytes, with a message that names the file. */
export async function readValueFile(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** True when `err` is a Connect error with `code`. */
export function isCode(err: unknown, code: Code): boolean {
  return err instanceof ConnectError && err.code === code;
}

/** A Unix ms timestamp as ISO-8601, "-" for none. */
export function when(ms: bigint | number): string {
  const n = Number(ms);
  return n === 0 ? "-" : new Date(n).toISOString();
}
