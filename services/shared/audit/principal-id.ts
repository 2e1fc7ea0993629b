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

/** True for administrators: users the auth service gave the admin role (and the root token). */
export function isAdmin(p: Principal): boolean {
  return p.kind === "user" && p.admin;
}
