import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { context, propagation, ROOT_CONTEXT, type Context } from "@opentelemetry/api";
import type {
  BatchCommitted,
  RunBatchesRequestSchema,
  RunBatchRequestSchema,
  SigningService,
} from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { codeFromName } from "../shared/errors.js";

type Request = MessageInitShape<typeof RunBatchesRequestSchema>;
type Batch = MessageInitShape<typeof RunBatchRequestSchema> & { batchId: string };

/**
 * A long-lived RunBatches stream shared by an executor's batches: each batch is one request,
 * carrying its own W3C trace context so that the signing service attributes its claim,
 * signing and commit to the right batch, and its answer is matched back by batch id. When the
 * stream breaks (the signing service restarts), every waiting batch fails with Unavailable and
 * the next batch opens a new stream.
 */
export function createBatchStream(client: Client<typeof SigningService>, headers: Record<string, string> = {}, streamContext: Context = ROOT_CONTEXT) {
  let current: { send(req: Request): Promise<void>; close(): void } | undefined;
  const waiting = new Map<string, { resolve(res: BatchCommitted): void; reject(err: unknown): void }>();

  function open() {
    const requests = createWritableIterable<Request>();
    const stream = {
      send(req: Request): Promise<void> {
        // The write settles when the stream takes the request; a broken stream answers the
        // batch through failAll, so the write's own rejection carries nothing new.
        return requests.write(req).catch(() => undefined);
      },
      close() {
        requests.close();
      },
    };
    const failAll = (err: unknown) => {
      if (current === stream) current = undefined;
      for (const [id, w] of waiting) {
        waiting.delete(id);
        w.reject(err);
      }
    };
    void (async () => {
      try {
        const replies = context.with(streamContext, () => client.runBatches(requests, { headers }));
        for await (const res of replies) {
          const w = waiting.get(res.batchId);
          if (!w) continue;
          waiting.delete(res.batchId);
          if (res.result.case === "committed") w.resolve(res.result.value);
          else w.reject(new ConnectError(res.result.value?.message ?? "the batch failed", codeFromName(res.result.value?.code ?? "")));
        }
        failAll(new ConnectError("signing stream ended", Code.Unavailable));
      } catch (err) {
        failAll(ConnectError.from(err));
      }
    })();
    return stream;
  }

  return {
    /**
     * Runs one batch (claim, sign, commit) on the shared stream: `taken` settles when the
     * stream has taken the request, `done` with the batch's outcome.
     */
    run(batch: Batch): { taken: Promise<void>; done: Promise<BatchCommitted> } {
      const carrier: Record<string, string> = {};
      propagation.inject(context.active(), carrier);
      let taken!: Promise<void>;
      const done = new Promise<BatchCommitted>((resolve, reject) => {
        waiting.set(batch.batchId, { resolve, reject });
        current ??= open();
        taken = current.send({ message: { case: "batch", value: batch }, traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" });
      });
      return { taken, done };
    },
    /** Hands a batch in flight its lease's renewed token (its commit goes out with it). */
    renew(batchId: string, leaseToken: string) {
      if (waiting.has(batchId)) void current?.send({ message: { case: "renewal", value: { batchId, leaseToken } } });
    },
    /** Abandons a batch in flight (its lease was lost): it commits nothing, and answers soon. */
    abandon(batchId: string) {
      if (waiting.has(batchId)) void current?.send({ message: { case: "abandon", value: batchId } });
    },
    /** Closes the stream once the waiting batches are answered. */
    close() {
      current?.close();
      current = undefined;
    },
  };
}

/** The shared batch stream of one executor. */
export type BatchStream = ReturnType<typeof createBatchStream>;
