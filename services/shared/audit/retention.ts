import { setInterval as every } from "node:timers/promises";
import type { Logger } from "pino";
import type { AuditLog } from "./types.js";

const DAY_MS = 86_400_000;

/** Options for `runAuditRetention`. */
export interface AuditRetentionOptions {
  readonly audit: AuditLog;
  /** KEYMESH_AUDIT_RETENTION_DAYS; 0 keeps events forever. */
  readonly days: number;
  /** How often to purge (default hourly). */
  readonly intervalMs?: number;
  readonly signal: AbortSignal;
  readonly logger?: Logger;
  readonly now?: () => number;
}

/** Purges once: deletes events older than the retention window; returns how many. */
export async function purgeExpiredAuditEvents(audit: AuditLog, days: number, now: number = Date.now()): Promise<number> {
  if (days <= 0) return 0;
  return audit.purge(now - days * DAY_MS);
}

/**
 * Purges expired events now and then every `intervalMs` until `signal` aborts. Several
 * processes may purge at once: deletes of the same rows are harmless. Failures are logged
 * and retried at the next tick; they never affect calls.
 */
export async function runAuditRetention(opts: AuditRetentionOptions): Promise<void> {
  if (opts.days <= 0) return;
  const once = async () => {
    try {
      const purged = await purgeExpiredAuditEvents(opts.audit, opts.days, (opts.now ?? Date.now)());
      if (purged > 0) opts.logger?.info({ purged, retentionDays: opts.days }, "audit events purged");
    } catch (err) {
      opts.logger?.warn({ err: String(err) }, "audit purge failed; retrying at the next interval");
    }
  };
  await once();
  try {
    for await (const _ of every(opts.intervalMs ?? 3_600_000, undefined, { signal: opts.signal, ref: false })) await once();
  } catch (err) {
    if (!opts.signal.aborted) throw err;
  }
}
