import { createWritableIterable } from "@connectrpc/connect/protocol";
import { toConnectError } from "../errors.js";

/**
 * Serves a bidirectional stream whose requests are answered as they finish, in any order:
 * `handle` turns each request into the promise of its reply, or into nothing for a request
 * that needs none (a control message). At most `cap` replies are pending at once, counted
 * from the moment their request is read until the transport has taken the reply; at the cap
 * the stream stops reading, so HTTP/2 flow control pushes back on the sender instead of
 * requests and replies piling up here. `handle` must not reject: a failed request is a reply.
 */
export async function* boundedReplies<Req, Reply>(
  requests: AsyncIterable<Req>,
  cap: number,
  handle: (request: Req) => Promise<Reply> | undefined,
): AsyncGenerator<Reply> {
  const replies = createWritableIterable<Reply>();
  let held = 0;
  let wakeReader: (() => void) | undefined;
  let inputDone = false;
  let failure: unknown;
  // Replies written before close() are still delivered; writes after it (the consumer left)
  // have nobody to go to.
  const finish = () => {
    if (failure !== undefined || (inputDone && held === 0)) replies.close();
  };
  const release = () => {
    held--;
    wakeReader?.();
    wakeReader = undefined;
    finish();
  };
  void (async () => {
    try {
      const it = requests[Symbol.asyncIterator]();
      for (;;) {
        while (held >= cap && failure === undefined) await new Promise<void>((resolve) => (wakeReader = resolve));
        const next = await it.next();
        if (next.done) break;
        const reply = handle(next.value);
        if (reply === undefined) continue;
        held++;
        // write() settles once the reply was taken (or the consumer left): the slot frees then.
        void reply.then((res) => replies.write(res).then(release, release));
      }
    } catch (err) {
      failure = err;
    } finally {
      inputDone = true;
      finish();
    }
  })();
  yield* replies;
  if (failure !== undefined) throw toConnectError(failure);
}
