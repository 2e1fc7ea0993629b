import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { context, propagation } from "@opentelemetry/api";
import type {
  SignBatchRequestSchema,
  SignBatchResponse,
  SignStreamRequestSchema,
  SigningService,
} from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { codeFromName } from "../shared/errors.js";

type Request = MessageInitShape<typeof SignStreamRequestSchema>;
type Batch = MessageInitShape<typeof SignBatchRequestSchema> & { batchId: string };

/**
 * A long-lived SignStream shared by an executor's batches: each batch is one request,
 * carrying its own W3C trace context so the signing service attributes the work to the right
 * batch, and its answer is matched back by batch id. When the stream breaks (the signing
 * service restarts), every waiting batch fails with Unavailable and the next batch opens a
 * new stream.
 */
export function createSignStream(client: Client<typeof SigningService>, headers: Record<string, string> = {}) {
  let current: { send(req: Request): void; close(): void } | undefined;
  const waiting = new Map<string, { resolve(res: SignBatchResponse): void; reject(err: unknown): void }>();

  function open() {
    const requests = createWritableIterable<Request>();
    const stream = {
      send(req: Request) {
        // The write settles when the stream takes the request; a broken stream answers the
        // batch through failAll, so the write's own rejection carries nothing new.
        requests.write(req).catch(() => undefined);
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
        for await (const res of client.signStream(requests, { headers })) {
          const w = waiting.get(res.batchId);
          if (!w) continue;
          waiting.delete(res.batchId);
          if (res.result.case === "signed") w.resolve(res.result.value);
          else w.reject(new ConnectError(res.result.value?.message ?? "signing failed", codeFromName(res.result.value?.code ?? "")));
        }
        failAll(new ConnectError("signing stream ended", Code.Unavailable));
      } catch (err) {
        failAll(ConnectError.from(err));
      }
    })();
    return stream;
  }

  return {
    /** Signs one batch on the shared stream. */
    sign(batch: Batch): Promise<SignBatchResponse> {
      const carrier: Record<string, string> = {};
      propagation.inject(context.active(), carrier);
      return new Promise<SignBatchResponse>((resolve, reject) => {
        waiting.set(batch.batchId, { resolve, reject });
        current ??= open();
        current.send({ batch, traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" });
      });
    },
    /** Closes the stream once the waiting batches are answered. */
    close() {
      current?.close();
      current = undefined;
    },
  };
}

/** The shared signing stream of one executor. */
export type SignStream = ReturnType<typeof createSignStream>;
