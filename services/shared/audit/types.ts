/**
 * The mesh's audit trail as services see it. Any service records events through
 * `AuditLog.record`; the promise resolves once the event is durably stored, and rejects with
 * `AuditUnavailableError` when it could not be, so the caller can fail closed.
 */

/** How a call ended, as the audit trail classifies it. */
export type AuditOutcome = "ok" | "denied" | "error";

/** One event to record. Never put values, plain secret names or credentials in it. */
export interface AuditRecord {
  /** Who called: `principalIdOf(principal)`, e.g. "user:42", "service:executor", "anonymous". */
  readonly principal: string;
  /** The caller's address ("" when unknown). */
  readonly peer?: string;
  /** The full RPC name ("keymesh.vault.v1.VaultService/GetSecret") or an event name ("auth.login"). */
  readonly method: string;
  readonly outcome: AuditOutcome;
  /** The Connect code name of a failure ("not_found"); "ok" for success. */
  readonly code?: string;
  /** The object acted on; its id is stored only as a keyed HMAC. */
  readonly object?: { readonly kind: string; readonly id: string };
  /** A version number involved (a secret version, a master-key version), 0 for none. */
  readonly version?: number;
  /** Event time in Unix ms (default: now). */
  readonly time?: number;
}

/** One stored event as `list` returns it. */
export interface StoredAuditEvent {
  readonly id: string;
  readonly timeMs: number;
  readonly principal: string;
  readonly peer: string;
  readonly method: string;
  readonly outcome: AuditOutcome;
  readonly code: string;
  readonly objectKind: string;
  readonly objectHmac: string;
  readonly version: number;
}

/** A page query over the trail. */
export interface AuditQuery {
  readonly limit: number;
  /** Newest first, strictly older than this id (paging backwards). */
  readonly beforeId?: string;
  /** Oldest first, strictly newer than this id (following). */
  readonly afterId?: string;
  readonly sinceMs?: number;
  /** Only events about this object id (HMACed here). */
  readonly objectId?: string;
}

/** The audit trail. */
export interface AuditLog {
  /** Records one event; resolves once stored, rejects with AuditUnavailableError otherwise. */
  record(event: AuditRecord): Promise<void>;
  /** The keyed HMAC (hex) an object id is stored as. */
  hmac(objectId: string): string;
  list(query: AuditQuery): Promise<StoredAuditEvent[]>;
  /** Deletes events older than `beforeMs`; returns how many went. */
  purge(beforeMs: number): Promise<number>;
  /** Waits for queued events to be written. */
  flush(): Promise<void>;
}
