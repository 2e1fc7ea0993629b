import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CollectionService } from "../../../gen/keymesh/collection/v1/collection_service_pb.js";
import { toConnectError } from "../errors.js";
import { createReadRetryInterceptor } from "./read-retry.js";

/** What mysql2 throws for a pooled connection the server killed or a failover closed. */
const lost = () => Object.assign(new Error("Connection lost: The server closed the connection."), { code: "PROTOCOL_CONNECTION_LOST", fatal: true });
/** What it throws when nothing listens: the database is down, not a stale connection. */
const refused = () => Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:3306"), { code: "ECONNREFUSED" });

/** A collection whose GetProgress and DeleteRecords fail with `failures` (in order) before they answer. */
function collection(failures: (() => Error)[]) {
  const calls = { getProgress: 0, deleteRecords: 0 };
  const fail = () => {
    const next = failures.shift();
    // As every handler does (mapErrors): a driver failure leaves as Unavailable, caused by it.
    if (next) throw toConnectError(next());
  };
  const transport = createRouterTransport(
    (router) =>
      router.service(CollectionService, {
        async getProgress() {
          calls.getProgress++;
          fail();
          return { total: 10n, signed: 4n, claimed: 0n };
        },
        async deleteRecords() {
          calls.deleteRecords++;
          fail();
          return { deleted: 10n };
        },
      }),
    { router: { interceptors: [createReadRetryInterceptor()] } },
  );
  return { client: createClient(CollectionService, transport), calls };
}

const codeOf = (p: Promise<unknown>) => p.then(() => 0, (err: unknown) => ConnectError.from(err).code);

describe("read retry on a lost database connection", () => {
  it("answers a read whose pooled connections the database had dropped", async () => {
    const { client, calls } = collection([lost, lost]);
    expect((await client.getProgress({})).signed).toBe(4n);
    expect(calls.getProgress).toBe(3);
  });

  it("gives up after two more attempts, with Unavailable", async () => {
    const { client, calls } = collection([lost, lost, lost, lost]);
    expect(await codeOf(client.getProgress({}))).toBe(Code.Unavailable);
    expect(calls.getProgress).toBe(3);
  });

  it("does not rerun a read when the database is down, nor a write whose connection was lost", async () => {
    const down = collection([refused]);
    expect(await codeOf(down.client.getProgress({}))).toBe(Code.Unavailable);
    expect(down.calls.getProgress).toBe(1);
    // Whether the delete committed before its connection died is unknown: the caller decides.
    const write = collection([lost]);
    expect(await codeOf(write.client.deleteRecords({}))).toBe(Code.Unavailable);
    expect(write.calls.deleteRecords).toBe(1);
  });
});
