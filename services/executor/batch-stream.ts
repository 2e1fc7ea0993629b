import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, type Client } from "@connectrpc/connect";
import { context, propagation, type Context } from "@opentelemetry/api";
import type {
  BatchCommitted,
  RunBatchesRequestSchema,
  RunBatchesResponse,
  RunBatchRequestSchema,
  SigningService,
} from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { codeFromName } from "../shared/errors.js";
import { createMultiplexedStream } from "../shared/streams/multiplexed.js";

type Request = MessageInitShape<typeof RunBatchesRequestSchema>;
type Batch = MessageInitShape<typeof RunBatchRequestSchema> & { batchId: string };

/**
 * A long-lived RunBatches stream shared by a job's batches (multiplexed.ts): each batch is one
 * request, carrying its own W3C trace context so that the signing service attributes its
 * claim, signing and commit to the right batch, and its answer is matched back by batch id.
 * The stream itself is opened in `streamContext` (the job's).
 */
export function createBatchStream(client: Client<typeof SigningService>, streamContext?: Context) {
  const stream = createMultiplexedStream({
    name: "the signing stream",
    open: (requests: AsyncIterable<Request>) => client.runBatches(requests),
    keyOf: (res: RunBatchesResponse) => res.batchId,
    streamContext,
  });

  return {
    /**
     * Runs one batch (claim, sign, commit) on the shared stream: `taken` settles when the
     * stream has taken the request, `done` with the batch's outcome.
     */
    run(batch: Batch): { taken: Promise<void>; done: Promise<BatchCommitted> } {
      const carrier: Record<string, string> = {};
      propagation.inject(context.active(), carrier);
      const { taken, answer } = stream.call(batch.batchId, {
        message: { case: "batch", value: batch },
        traceparent: carrier.traceparent ?? "",
        tracestate: carrier.tracestate ?? "",
      });
      const done = answer.then(({ result }) => {
        if (result.case === "committed") return result.value;
        throw new ConnectError(result.value?.message ?? "the batch failed", codeFromName(result.value?.code ?? ""));
      });
      return { taken, done };
    },
    /** Hands a batch in flight its lease's renewed token (its commit goes out with it). */
    renew(batchId: string, leaseToken: string) {
      if (stream.waiting(batchId)) stream.tell({ message: { case: "renewal", value: { batchId, leaseToken } } });
    },
    /** Abandons a batch in flight (its lease was lost): it commits nothing, and answers soon. */
    abandon(batchId: string) {
      if (stream.waiting(batchId)) stream.tell({ message: { case: "abandon", value: batchId } });
    },
    /** Closes the stream once the waiting batches are answered. */
    close: () => stream.close(),
  };
}

/** The shared batch stream of one executor job. */
export type BatchStream = ReturnType<typeof createBatchStream>;
