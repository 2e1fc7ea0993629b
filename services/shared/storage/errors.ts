/**
 * Classifies database driver failures (mysql2, better-sqlite3, knex's pool): which of them
 * mean "the database is down or temporarily refusing work". Only recognition lives here; the
 * error class they become, `UnavailableError`, is in services/shared/errors.ts, and
 * `toDbError` (storage/database.ts) does the conversion. Everything else (constraint
 * violations, bad SQL, bugs) is not a transient failure.
 */

/** Socket-level failures: the server is down, unreachable or dropped us. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ENOTFOUND",
]);

/** MySQL/MariaDB (mysql2) codes that mean "try again", not "your request is wrong". */
const MYSQL_CODES = new Set([
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR",
  "PROTOCOL_ENQUEUE_AFTER_QUIT",
  "ER_LOCK_DEADLOCK",
  "ER_LOCK_WAIT_TIMEOUT",
  "ER_CON_COUNT_ERROR",
  "ER_TOO_MANY_USER_CONNECTIONS",
  "ER_SERVER_SHUTDOWN",
  "ER_CONNECTION_KILLED",
  "ER_CLIENT_INTERACTION_TIMEOUT",
  "ER_NET_READ_ERROR",
  "ER_NET_READ_INTERRUPTED",
  "ER_NET_ERROR_ON_WRITE",
  "ER_NET_WRITE_INTERRUPTED",
  "ER_OPTION_PREVENTS_STATEMENT", // --read-only during a failover
]);

/** The same conditions by server errno, for errors that carry only a number. */
const MYSQL_ERRNOS = new Set([1040, 1053, 1205, 1213, 1203, 1290, 1927, 2006, 2013, 4031]);

interface ErrorLike {
  code?: unknown;
  errno?: unknown;
  name?: unknown;
  cause?: unknown;
}

function transientHere(err: ErrorLike): string | undefined {
  const code = typeof err.code === "string" ? err.code : undefined;
  if (code !== undefined) {
    if (NETWORK_CODES.has(code) || MYSQL_CODES.has(code)) return code;
    if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return code;
  }
  if (typeof err.errno === "number" && MYSQL_ERRNOS.has(err.errno) && code?.startsWith("SQLITE_") !== true) {
    return code ?? `errno ${err.errno}`;
  }
  // knex's pool gave up waiting for a connection: the database is too slow or gone.
  if (err.name === "KnexTimeoutError") return "KnexTimeoutError";
  // mysql2 marks errors that broke the connection as fatal; some carry no code at all
  // ("Can't add new command when connection is in closed state").
  if ((err as { fatal?: unknown }).fatal === true) return code ?? "connection closed";
  if (typeof (err as { message?: unknown }).message === "string" && /connection is in closed state/.test((err as { message: string }).message)) {
    return "connection closed";
  }
  return undefined;
}

/**
 * The driver code when `err` (or its cause chain) means the database is down, unreachable or
 * temporarily refusing work: connection refused/lost, deadlock, lock wait timeout, too many
 * connections, server shutdown, SQLITE_BUSY/SQLITE_LOCKED, pool acquire timeout.
 */
export function dbUnavailableCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== null && typeof current === "object"; depth++) {
    const found = transientHere(current as ErrorLike);
    if (found !== undefined) return found;
    current = (current as ErrorLike).cause;
  }
  return undefined;
}

/** True when `err` (or its cause chain) means the database is down or temporarily refusing work. */
export function isTransientDbError(err: unknown): boolean {
  return dbUnavailableCode(err) !== undefined;
}

const codeOf = (err: unknown) => String((err as { code?: unknown } | null)?.code ?? "");

/** True when `err` is a unique or primary key violation (MySQL/MariaDB or SQLite). */
export function isDuplicateKey(err: unknown): boolean {
  const code = codeOf(err);
  return code === "ER_DUP_ENTRY" || code.startsWith("SQLITE_CONSTRAINT_UNIQUE") || code.startsWith("SQLITE_CONSTRAINT_PRIMARYKEY");
}

/** True when `err` is a foreign key violation: a row refers to one that does not exist. */
export function isMissingReference(err: unknown): boolean {
  const code = codeOf(err);
  return code === "ER_NO_REFERENCED_ROW_2" || code === "ER_NO_REFERENCED_ROW" || code.startsWith("SQLITE_CONSTRAINT_FOREIGNKEY");
}

/** The driver code of `err` or of an error in its cause chain that is one of `codes`. */
function codeInChain(err: unknown, codes: ReadonlySet<string>): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== null && typeof current === "object"; depth++) {
    const code = codeOf(current);
    if (codes.has(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

const DEADLOCK = new Set(["ER_LOCK_DEADLOCK"]);
const LOCK_WAIT_TIMEOUT = new Set(["ER_LOCK_WAIT_TIMEOUT"]);

/**
 * True when `err` is a deadlock MariaDB/MySQL broke by rolling this transaction back: the
 * transaction did nothing and may simply run again.
 */
export function isDeadlock(err: unknown): boolean {
  return codeInChain(err, DEADLOCK) !== undefined;
}

/**
 * True when `err` is a lock wait that ran out (`innodb_lock_wait_timeout`): only the statement
 * was rolled back, and the transaction goes on.
 */
export function isLockWaitTimeout(err: unknown): boolean {
  return codeInChain(err, LOCK_WAIT_TIMEOUT) !== undefined;
}

/**
 * Codes of a connection lost under a statement: killed by the server, reset, or closed by a
 * restart or failover. A pool still holds such connections until it sees them close, so a
 * statement that met one failed for nothing the database is doing now, and a fresh connection
 * usually answers. A refused connection, a deadlock or a full pool is not this.
 */
const LOST_CONNECTION = new Set([
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR",
  "PROTOCOL_ENQUEUE_AFTER_QUIT",
  "ER_CONNECTION_KILLED",
  "ER_SERVER_SHUTDOWN",
  "ER_NET_READ_ERROR",
  "ER_NET_READ_INTERRUPTED",
  "ER_NET_ERROR_ON_WRITE",
  "ER_NET_WRITE_INTERRUPTED",
  "ECONNRESET",
  "EPIPE",
]);

/** True when `err` (or its cause chain) is a database connection lost under the statement. */
export function isLostDbConnection(err: unknown): boolean {
  if (codeInChain(err, LOST_CONNECTION) !== undefined) return true;
  // mysql2's "Can't add new command when connection is in closed state" carries no code.
  return dbUnavailableCode(err) === "connection closed";
}
