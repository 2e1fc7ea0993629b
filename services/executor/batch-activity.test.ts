import { describe, expect, it } from "vitest";
import { createBatchActivity } from "./batch-activity.js";

/** Whether `p` settles within `ms` (the waits below are a minute long: only a wake-up settles them). */
const settlesWithin = (p: Promise<unknown>, ms: number) =>
  Promise.race([p.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))]);

const MINUTE = 60_000;

describe("batch activity", () => {
  it("wakes an idle worker as the last batch in flight ends, not at its timeout", async () => {
    const activity = createBatchActivity();
    const first = activity.begin();
    const second = activity.begin();
    const seen = activity.ended;
    const waiting = activity.quiet(seen, MINUTE, new AbortController().signal);
    first(true);
    // One batch is still running: its end may sign the last records or give some back.
    expect(await settlesWithin(waiting, 30)).toBe(false);
    second(true);
    expect(await settlesWithin(waiting, 1000)).toBe(true);
    expect(activity.inFlight).toBe(0);
    expect(activity.ended).toBe(seen + 2);
  });

  it("returns at once when the batches ended between the caller's look and its wait", async () => {
    const activity = createBatchActivity();
    const end = activity.begin();
    const seen = activity.ended;
    end(true);
    expect(await settlesWithin(activity.quiet(seen, MINUTE, new AbortController().signal), 30)).toBe(true);
  });

  it("waits out the timeout when nothing runs here and nothing ended since", async () => {
    const activity = createBatchActivity();
    activity.begin()(true);
    const quiet = activity.quiet(activity.ended, 50, new AbortController().signal);
    expect(await settlesWithin(quiet, 20)).toBe(false);
    expect(await settlesWithin(quiet, 1000)).toBe(true);
  });

  it("is not woken by attempts that claimed nothing, which idle workers make all the time", async () => {
    const activity = createBatchActivity();
    activity.begin()(true);
    const seen = activity.ended;
    const quiet = activity.quiet(seen, MINUTE, new AbortController().signal);
    // Other idle workers try to claim, find nothing, and go idle again: no reason to look at
    // the totals, and waking on each would be a busy loop between them.
    for (let i = 0; i < 5; i++) activity.begin()(false);
    expect(activity.ended).toBe(seen);
    expect(await settlesWithin(quiet, 50)).toBe(false);
    // A batch that worked and ended with nothing else in flight does wake it.
    const real = activity.begin();
    const empty = activity.begin();
    real(true);
    expect(await settlesWithin(quiet, 20)).toBe(false);
    empty(false);
    expect(await settlesWithin(quiet, 20)).toBe(true);
  });

  it("counts a batch's end once however often it is marked, and stops waiting when the job stops", async () => {
    const activity = createBatchActivity();
    const end = activity.begin();
    activity.begin();
    end(true);
    end(true);
    expect(activity.inFlight).toBe(1);
    expect(activity.ended).toBe(1);
    const stop = new AbortController();
    const waiting = activity.quiet(activity.ended, MINUTE, stop.signal);
    stop.abort();
    expect(await settlesWithin(waiting, 1000)).toBe(true);
    expect(await settlesWithin(activity.quiet(0, MINUTE, stop.signal), 30)).toBe(true);
  });
});
