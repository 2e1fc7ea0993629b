import { randomBytes } from "node:crypto";
import { UnavailableError } from "../errors.js";
import { redisUnavailableCode } from "./errors.js";

/** Checks a TTL argument: a positive integer number of milliseconds. */
export function assertTtl(ttlMs: number): void {
  if (!Number.isInteger(ttlMs) || ttlMs < 1) {
    throw new RangeError(`lease TTL must be a positive integer of milliseconds, got ${ttlMs}`);
  }
}

/** A fresh random lease value (128 bits, hex). */
export function leaseValue(): string {
  return randomBytes(16).toString("hex");
}

/** Checks a queue payload: at least one field, every value a string. */
export function assertPayload(payload: Record<string, string>): void {
  const keys = Object.keys(payload);
  if (keys.length === 0) throw new TypeError("a queue entry needs at least one field");
  for (const k of keys) {
    if (typeof payload[k] !== "string") throw new TypeError(`queue entry field ${k} is not a string`);
  }
}

/** Consume defaults shared by both adapters. */
export const CONSUME_DEFAULTS = { blockMs: 1_000, idleClaimMs: 30_000, count: 10 } as const;

/** Rethrows Redis connectivity failures as UnavailableError("coordination"), anything else unchanged. */
export function toCoordinationError(err: unknown, what: string): unknown {
  if (err instanceof UnavailableError) return err;
  const reason = redisUnavailableCode(err);
  if (reason === undefined) return err;
  return new UnavailableError("coordination", `${what}: Redis unavailable (${reason})`, { cause: err });
}
