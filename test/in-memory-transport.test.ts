import { Code, ConnectError, createClient, type ConnectRouter, type HandlerContext, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { describe, expect, it } from "vitest";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { SigningService, type SignStreamRequest, type VerifyRequest, type VerifyResponse } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { createInMemoryTransport } from "../services/shared/server/in-memory-transport.js";

/**
 * Calls between services of one process hand messages over without encoding them: these tests
 * hold that transport to what a call over the network gives (isolated messages, interceptors,
 * deadlines, errors without the server's internals, streams).
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Interceptors = { server?: Interceptor[]; client?: Interceptor[] };

function transportTo(routes: (router: ConnectRouter) => void, interceptors: Interceptors = {}) {
  return createInMemoryTransport(routes, { router: { interceptors: interceptors.server ?? [] }, clientInterceptors: interceptors.client ?? [] });
}

/** A SigningService client over the in-memory transport to `impl`. */
function signingClient(impl: Partial<ServiceImpl<typeof SigningService>>, interceptors: Interceptors = {}) {
  return createClient(SigningService, transportTo((router) => router.service(SigningService, impl), interceptors));
}

describe("in-memory transport", () => {
  it("gives each side its own copy of a message, bytes included", async () => {
    let received: VerifyRequest | undefined;
    const reply = { valid: true, $typeName: "keymesh.signing.v1.VerifyResponse" } as VerifyResponse;
    const client = signingClient({
      verify(req) {
        received = req;
        return reply;
      },
    });
    const payload = Buffer.from("sign me");
    const signature = new Uint8Array(64).fill(7);
    const request = { key: { case: "keyId" as const, value: "k1" }, payload, signature };
    const res = await client.verify(request);

    // The caller wipes and changes what it sent; the handler's request does not change.
    payload.fill(0);
    signature.fill(0);
    request.key.value = "k2";
    expect(Buffer.from(received!.payload).toString()).toBe("sign me");
    expect(received!.signature).toEqual(new Uint8Array(64).fill(7));
    expect(received!.key).toEqual({ case: "keyId", value: "k1" });
    // The handler changes what it answered; the caller's reply does not change.
    reply.valid = false;
    expect(res.valid).toBe(true);
    expect(res).not.toBe(reply);
  });

  it("fills the fields a caller left out with their defaults, as decoding would", async () => {
    let received: VerifyRequest | undefined;
    const client = signingClient({
      verify(req) {
        received = req;
        return {};
      },
    });
    const res = await client.verify({});
    expect(received!.payload).toEqual(new Uint8Array(0));
    expect(received!.key).toEqual({ case: undefined });
    expect(res.valid).toBe(false);
  });

  it("runs the client's and the server's interceptors, and the server reads the client's headers", async () => {
    const seen: string[] = [];
    const client = signingClient(
      {
        verify(_req, ctx) {
          seen.push(`handler sees ${ctx.requestHeader.get("authorization")}`);
          return { valid: true };
        },
      },
      {
        client: [
          (next) => (req) => {
            req.header.set("authorization", "Bearer service-token");
            seen.push("client");
            return next(req);
          },
        ],
        server: [
          (next) => (req) => {
            seen.push(`server ${req.method.name}`);
            return next(req);
          },
        ],
      },
    );
    await client.verify({});
    expect(seen).toEqual(["client", "server Verify", "handler sees Bearer service-token"]);
  });

  it("answers Unimplemented for a method this process does not serve", async () => {
    const client = createClient(KeyManagementService, transportTo((router) => router.service(SigningService, {})));
    const err = await client.getKeyringKey({ keyId: "k1" }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unimplemented);
  });

  it("hands the caller only what a remote caller would receive of an error", async () => {
    const secret = new Error("SELECT * FROM keys WHERE secret = 'x' failed");
    const client = signingClient({
      verify(_req, ctx) {
        ctx.responseHeader.set("retry-after", "3");
        throw new ConnectError("busy, try again", Code.Unavailable, { "x-reason": "queue-full" }, undefined, secret);
      },
    });
    const err = ConnectError.from(await client.verify({}).catch((e: unknown) => e));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toBe("busy, try again");
    expect(err.metadata.get("retry-after")).toBe("3");
    expect(err.metadata.get("x-reason")).toBe("queue-full");
    expect(err.cause).toBeUndefined();
    expect(String(err.stack)).not.toContain("SELECT");
  });

  it("passes the caller's deadline to the handler and aborts it when the deadline passes", async () => {
    let context: HandlerContext | undefined;
    const client = signingClient({
      async verify(_req, ctx) {
        context = ctx;
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        return {};
      },
    });
    const started = Date.now();
    const err = ConnectError.from(await client.verify({}, { timeoutMs: 100 }).catch((e: unknown) => e));
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(context!.signal.aborted).toBe(true);
  });

  it("gives a call with a timeout of 0 no deadline, as connect's transports do", async () => {
    let remaining: number | undefined = -1;
    const client = signingClient({
      async verify(_req, ctx) {
        await sleep(20);
        remaining = ctx.timeoutMs();
        return { valid: true };
      },
    });
    expect((await client.verify({}, { timeoutMs: 0 })).valid).toBe(true);
    expect(remaining).toBeUndefined();
  });

  it("aborts the handler's signal when the caller cancels", async () => {
    let aborted: Promise<unknown> | undefined;
    const client = signingClient({
      async verify(_req, ctx) {
        aborted = new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        await aborted;
        return {};
      },
    });
    const cancel = new AbortController();
    const call = client.verify({}, { signal: cancel.signal }).catch((e: unknown) => ConnectError.from(e));
    await sleep(20);
    cancel.abort();
    expect((await call as ConnectError).code).toBe(Code.Canceled);
    await expect(aborted).resolves.toBeDefined();
  });

  it("refuses a call cancelled before it reaches the handler, and leaves no rejection unhandled", async () => {
    let called = 0;
    const client = signingClient(
      {
        verify() {
          called++;
          return {};
        },
      },
      {
        // The caller gives up while its own interceptors run, before the call is handed over.
        client: [
          (next) => async (req) => {
            cancel.abort();
            return next(req);
          },
        ],
        // A server interceptor that fails on a cancelled call, as the call limits do.
        server: [
          (next) => async (req) => {
            if (req.signal.aborted) throw new ConnectError("the call was cancelled", Code.Canceled);
            return next(req);
          },
        ],
      },
    );
    const cancel = new AbortController();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const err = ConnectError.from(await client.verify({}, { signal: cancel.signal }).catch((e: unknown) => e));
      expect(err.code).toBe(Code.Canceled);
      await sleep(50);
      expect(unhandled).toEqual([]);
      expect(called).toBe(0);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("streams both ways, each message a copy, and ends the handler's context with the stream", async () => {
    const held: SignStreamRequest[] = [];
    let context: HandlerContext | undefined;
    const client = signingClient({
      async *signStream(requests, ctx) {
        context = ctx;
        for await (const req of requests) {
          held.push(req);
          yield { batchId: req.batch?.batchId ?? "", result: { case: "signed", value: { batchId: req.batch?.batchId ?? "", signatures: { recordIds: req.batch?.records?.ids ?? [], signatures: new Uint8Array(64 * (req.batch?.records?.ids.length ?? 0)) } } } };
        }
      },
    });
    const requests = createWritableIterable<{ batch: { batchId: string; records: { ids: bigint[]; payloadLengths: number[]; payloads: Uint8Array } } }>();
    const replies = client.signStream(requests);
    const payloads = Buffer.from("abcdef");
    void (async () => {
      await requests.write({ batch: { batchId: "b1", records: { ids: [1n, 2n], payloadLengths: [3, 3], payloads } } });
      payloads.fill(0);
      await requests.write({ batch: { batchId: "b2", records: { ids: [3n], payloadLengths: [1], payloads: Buffer.from("z") } } });
      requests.close();
    })();
    const got: string[] = [];
    for await (const reply of replies) {
      expect(reply.result.case).toBe("signed");
      got.push(`${reply.batchId}:${reply.result.case === "signed" ? reply.result.value.signatures?.recordIds.length : 0}`);
    }
    expect(got).toEqual(["b1:2", "b2:1"]);
    expect(Buffer.from(held[0]!.batch!.records!.payloads).toString()).toBe("abcdef");
    expect(context!.signal.aborted).toBe(true);
  });

  it("ends a stream with the handler's error, as a remote caller receives it", async () => {
    const client = signingClient({
      // A generator that fails before its first reply.
      async *signStream() {
        throw new ConnectError("the lease lapsed", Code.FailedPrecondition, undefined, undefined, new Error("internal detail"));
      },
    });
    const requests = createWritableIterable<{ batch: { batchId: string } }>();
    requests.close();
    const err = await (async () => {
      for await (const _ of client.signStream(requests)) void _;
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((err as ConnectError).rawMessage).toBe("the lease lapsed");
    expect((err as ConnectError).cause).toBeUndefined();
  });
});
