import type { Principal } from "../context.js";

/**
 * A principal's stable id as the audit trail and ownership records store it:
 * "user:<userId>" for people, "service:<name>" for keymesh services, "anonymous" otherwise.
 * Reads fields rather than switching on every kind, so new principal kinds need no change.
 */
export function principalIdOf(p: Principal): string {
  if ("userId" in p) return `user:${p.userId}`;
  if (p.kind === "service") return `service:${p.name}`;
  return "anonymous";
}

/**
 * True for administrators: users with `admin` set, and the single local developer of
 * development mode (who administers their own embedded installation).
 */
export function isAdmin(p: Principal): boolean {
  if ("admin" in p && (p as { admin?: unknown }).admin === true) return true;
  return (p.kind as string) === "development";
}
