import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { untilAborted } from "./until-aborted.js";

describe("untilAborted", () => {
  it("settles with the promise while the signal stays quiet, and leaves no listener behind", async () => {
    const signal = new AbortController().signal;
    const pending = untilAborted(Promise.resolve(7), signal);
    expect(getEventListeners(signal, "abort")).toHaveLength(1);
    await expect(pending).resolves.toBe(7);
    await expect(untilAborted(Promise.reject(new Error("no")), signal)).rejects.toThrow("no");
    expect(getEventListeners(signal, "abort")).toHaveLength(0);
  });

  it("rejects with the given reason when the signal aborts, first or later, and handles the promise's own rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const already = AbortSignal.abort(new Error("gone"));
      await expect(untilAborted(new Promise((_, reject) => setTimeout(() => reject(new Error("late")), 5)), already)).rejects.toThrow("gone");
      const later = new AbortController();
      const waiting = untilAborted(new Promise((_, reject) => setTimeout(() => reject(new Error("late")), 20)), later.signal, () => new Error("cancelled"));
      later.abort();
      await expect(waiting).rejects.toThrow("cancelled");
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });
});
