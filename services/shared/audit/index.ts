import type { Database } from "../storage/database.js";
import { createAuditLog } from "./audit-log.js";
import type { AuditLog } from "./types.js";

export { AuditUnavailableError, createAuditLog, type AuditLogOptions } from "./audit-log.js";
export { loadAuditKey } from "./audit-key.js";
export { audited, outcomeOf, type AuditScope } from "./audited.js";
export { isAdmin, principalIdOf } from "./principal-id.js";
export { purgeExpiredAuditEvents, runAuditRetention } from "./retention.js";
export type { AuditLog, AuditOutcome, AuditQuery, AuditRecord, StoredAuditEvent } from "./types.js";

const shared = new WeakMap<Database, AuditLog>();

/**
 * The process's one audit log for a database: every service module of a process that
 * audits shares it, so their events group into the same inserts. The first caller's key
 * wins (all callers load it from the same configuration).
 */
export function auditLogFor(db: Database, key: Buffer): AuditLog {
  let log = shared.get(db);
  if (log === undefined) {
    log = createAuditLog({ db, key });
    shared.set(db, log);
  }
  return log;
}
