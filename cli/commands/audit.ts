import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { AuditOutcome, type AuditEvent } from "../../gen/keymesh/vault/v1/vault_pb.js";
import { CLIENT_OPTIONS, CLIENT_USAGE } from "../connect.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { vaultClient, when } from "../vault-client.js";

const USAGE = `Usage: keymesh audit tail [--follow] [--limit N] [--object ID] [--json] [--url URL] [--token TOKEN]

Prints the newest audit events of the mesh (administrators only), oldest first; with
--follow keeps printing new ones as they arrive (Ctrl-C to stop). Object ids are shown as
the keyed HMACs the trail stores; --object ID shows only the events about that id.

Options:
  -f, --follow     keep printing new events
  -n, --limit N    how many recent events to print first (default 20)
      --object ID  only events about this secret (or other object) id
      --json       one JSON object per line
${CLIENT_USAGE}
  -h, --help       show this help`;

const OUTCOME: Record<number, string> = { [AuditOutcome.OK]: "ok", [AuditOutcome.DENIED]: "denied", [AuditOutcome.ERROR]: "error" };

/** How often --follow asks for new events. */
const FOLLOW_POLL_MS = 1_000;

/** `keymesh audit tail`: the mesh's audit trail. */
export const auditCommand: Command = {
  name: "audit",
  summary: "print (and follow) the mesh's audit trail",
  usage: USAGE,
  async run(args, io) {
    const { values, positionals } = parseArgs({
      args,
      options: {
        follow: { type: "boolean", short: "f", default: false },
        limit: { type: "string", short: "n", default: "20" },
        object: { type: "string" },
        json: { type: "boolean", default: false },
        ...CLIENT_OPTIONS,
      },
      allowPositionals: true,
    });
    if (positionals[0] !== "tail" || positionals.length > 1) throw new UsageError("expected `keymesh audit tail`");
    const limit = Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError("--limit expects 1 to 1000");
    const client = vaultClient(values, io);
    const objectId = values.object ?? "";
    const print = (e: AuditEvent) => {
      const line = {
        id: e.eventId,
        time: when(e.timeMs),
        principal: e.principalId,
        peer: e.peer,
        method: e.method,
        outcome: OUTCOME[e.outcome] ?? "unknown",
        code: e.code,
        objectKind: e.objectKind,
        objectHmac: e.objectHmac,
        version: e.version,
      };
      if (values.json) io.stdout.write(`${JSON.stringify(line)}\n`);
      else {
        const obj = e.objectHmac === "" ? "" : ` ${e.objectKind}:${e.objectHmac.slice(0, 16)}${e.version ? ` v${e.version}` : ""}`;
        io.stdout.write(`${line.time} ${line.outcome.padEnd(6)} ${e.principalId} ${e.method}${obj}${e.code ? ` (${e.code})` : ""} from ${e.peer || "?"}\n`);
      }
    };
    const recent = await client.listAuditEvents({ pageSize: limit, objectId });
    const events = [...recent.events].reverse();
    for (const e of events) print(e);
    if (!values.follow) return EXIT.ok;
    let last = events.at(-1)?.eventId ?? "0";
    const stop = new AbortController();
    const onSigint = () => stop.abort();
    process.once("SIGINT", onSigint);
    // Callers embedding the CLI (tests) stop a follow with their own signal.
    (io as { signal?: AbortSignal }).signal?.addEventListener("abort", onSigint, { once: true });
    try {
      while (!stop.signal.aborted) {
        const page = await client.listAuditEvents({ afterEventId: last, pageSize: 500, objectId });
        for (const e of page.events) print(e);
        last = page.events.at(-1)?.eventId ?? last;
        if (page.events.length < 500) await sleep(FOLLOW_POLL_MS, undefined, { signal: stop.signal }).catch(() => undefined);
      }
    } finally {
      process.removeListener("SIGINT", onSigint);
    }
    return EXIT.ok;
  },
};
