/**
 * SQL spans named by the OpenTelemetry database conventions.
 *
 * knex's instrumentation names a span `{method} {database}.{table}`, where the database of
 * SQLite is the file's absolute path and the table keeps its alias:
 * `select /home/me/keymesh/data/keymesh.sqlite.records as r`. This processor renames each
 * knex span when it starts to `{db.operation.name} {db.collection.name}` (`SELECT records`,
 * or `SELECT` when no table is known) and sets `db.system.name` (and the older `db.system`)
 * to `mysql` or `sqlite` and `db.namespace` to the database name (for SQLite the file's name,
 * never its path). A processor may rename a span and set its attributes while it is still
 * recording, which is what `onStart` receives.
 */
import type { Attributes, Context } from "@opentelemetry/api";
import type { Span, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { basename } from "node:path";

/** Instrumentation scope of the spans renamed here. */
export const KNEX_SCOPE = "@opentelemetry/instrumentation-knex";

/** knex builder methods whose SQL verb differs from their name (used without query text). */
const knexMethods: Readonly<Record<string, string>> = {
  first: "SELECT",
  pluck: "SELECT",
  del: "DELETE",
  counter: "UPDATE",
};

/** What a SQL span is named and described by. */
export interface SqlSpanFacts {
  readonly name: string;
  readonly operation?: string;
  readonly table?: string;
  /** The stored procedure a CALL runs. */
  readonly procedure?: string;
  readonly system: string;
  readonly namespace?: string;
}

/** A span processor that renames knex spans; give it before the exporting processor. */
export function createSqlSpanProcessor(): SpanProcessor {
  return {
    onStart(span: Span, _parent: Context): void {
      if (span.instrumentationScope.name !== KNEX_SCOPE) return;
      const { name, attributes } = sqlSpanOf(span.attributes);
      span.updateName(name);
      span.setAttributes(attributes);
    },
    onEnd(): void {},
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

/** A SQL span's name and conventional attributes, as `describeSqlSpan` derives them. */
export interface SqlSpan {
  readonly name: string;
  readonly attributes: Attributes;
}

/** Per distinct set of the attributes they are derived from: statements repeat. */
const described = new Map<string, SqlSpan>();

/**
 * The name and database-convention attributes (`db.system.name`, the older `db.system`,
 * `db.operation.name`, `db.collection.name`, `db.namespace`) of a SQL span, from what its
 * statement and driver say; worked out once per distinct input.
 */
export function sqlSpanOf(attributes: Readonly<Record<string, unknown>>): SqlSpan {
  const key = [attributes["db.query.text"], attributes["db.operation.name"], attributes["db.collection.name"], attributes["db.system.name"] ?? attributes["db.system"], attributes["db.namespace"]].join("\u0000");
  let known = described.get(key);
  if (!known) {
    const facts = describeSqlSpan(attributes);
    known = {
      name: facts.name,
      attributes: {
        "db.system.name": facts.system,
        "db.system": facts.system,
        ...(facts.operation === undefined ? {} : { "db.operation.name": facts.operation }),
        ...(facts.table === undefined ? {} : { "db.collection.name": facts.table }),
        ...(facts.procedure === undefined ? {} : { "db.stored_procedure.name": facts.procedure }),
        ...(facts.namespace === undefined ? {} : { "db.namespace": facts.namespace }),
      },
    };
    described.set(key, known);
    if (described.size > 1024) described.delete(described.keys().next().value!);
  }
  return known;
}

/** Derives the name and attributes of a knex span from the attributes knex gave it. */
export function describeSqlSpan(attributes: Readonly<Record<string, unknown>>): SqlSpanFacts {
  const text = typeof attributes["db.query.text"] === "string" ? attributes["db.query.text"] : undefined;
  const method = typeof attributes["db.operation.name"] === "string" ? attributes["db.operation.name"] : undefined;
  const system = sqlSystem(String(attributes["db.system.name"] ?? attributes["db.system"] ?? ""));
  const rawNamespace = typeof attributes["db.namespace"] === "string" ? attributes["db.namespace"] : undefined;
  const namespace = rawNamespace === undefined ? undefined : system === "sqlite" ? basename(rawNamespace) : rawNamespace;

  const operation = (text === undefined ? undefined : firstKeyword(text)) ?? (method === undefined ? undefined : knexMethods[method] ?? method.toUpperCase());
  const collection = typeof attributes["db.collection.name"] === "string" ? tableName(attributes["db.collection.name"]) : undefined;
  const table = collection ?? (text === undefined || operation === undefined ? undefined : tableOf(operation, text));
  // A CALL is named after its procedure (`CALL keymesh_open_key_grant`), as the conventions name a stored procedure's span.
  const procedure = operation === "CALL" && text !== undefined ? /^\W*call\s+[`"]?([\w$]+)/i.exec(text)?.[1] : undefined;
  const target = table ?? procedure;
  const name = operation === undefined ? system : target === undefined ? operation : `${operation} ${target}`;
  return { name, operation, table, procedure, system, namespace };
}

function sqlSystem(knexSystem: string): string {
  if (knexSystem.startsWith("mysql")) return "mysql";
  if (knexSystem.includes("sqlite")) return "sqlite";
  return knexSystem || "other_sql";
}

/** The statement's verb: `SELECT`, `INSERT`, ... (comments and parentheses skipped). */
function firstKeyword(sql: string): string | undefined {
  const match = /^(?:\s|\(|\/\*[\s\S]*?\*\/|--[^\n]*\n)*([a-z]+)/i.exec(sql);
  return match?.[1]?.toUpperCase();
}

const identifier = String.raw`[\`"\[]?([\w$]+)[\`"\]]?(?:\.[\`"\[]?([\w$]+)[\`"\]]?)?`;
const tablePatterns: Readonly<Record<string, RegExp>> = {
  SELECT: new RegExp(String.raw`\bfrom\s+${identifier}`, "i"),
  DELETE: new RegExp(String.raw`\bfrom\s+${identifier}`, "i"),
  INSERT: new RegExp(String.raw`\binto\s+${identifier}`, "i"),
  REPLACE: new RegExp(String.raw`\binto\s+${identifier}`, "i"),
  UPDATE: new RegExp(String.raw`^\W*update\s+(?:or\s+\w+\s+)?${identifier}`, "i"),
  CREATE: new RegExp(String.raw`\b(?:table|index\s+\S+\s+on)\s+(?:if\s+not\s+exists\s+)?${identifier}`, "i"),
  ALTER: new RegExp(String.raw`\btable\s+${identifier}`, "i"),
  DROP: new RegExp(String.raw`\btable\s+(?:if\s+exists\s+)?${identifier}`, "i"),
  TRUNCATE: new RegExp(String.raw`\btruncate\s+(?:table\s+)?${identifier}`, "i"),
};

/** The first table a statement names, for the verbs above; a sub-select has none. */
function tableOf(operation: string, sql: string): string | undefined {
  const match = tablePatterns[operation]?.exec(sql);
  if (!match) return undefined;
  return match[2] ?? match[1];
}

/** `records as r` → `records`; `keymesh.records` → `records`; quotes removed. */
function tableName(collection: string): string | undefined {
  const first = collection.split(/\s+as\s+|\s+/i)[0]?.replace(/[`"[\]]/g, "") ?? "";
  const last = first.split(".").pop() ?? "";
  return last === "" ? undefined : last;
}
