import { create } from "@bufbuild/protobuf";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { JobProgressSchema, JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { createProgressView } from "./progress.js";

const progress = (signed: number, total = 1000) =>
  create(JobProgressSchema, { jobId: "job-1", state: JobState.RUNNING, signedRecords: BigInt(signed), totalRecords: BigInt(total), recordsPerSecond: 500 });

function capture() {
  const out = new PassThrough();
  let text = "";
  out.setEncoding("utf8").on("data", (c: string) => (text += c));
  return { out, text: () => text };
}

describe("progress view", () => {
  it("on a TTY redraws one line in place for every message", () => {
    const { out, text } = capture();
    const view = createProgressView(out, { tty: true, columns: 200 });
    for (let signed = 0; signed <= 1000; signed += 50) view.update(progress(signed));
    view.end();
    const frames = text().split("\r").filter(Boolean);
    expect(frames).toHaveLength(21);
    expect(frames.map((f) => /(\d+\.\d)%/.exec(f)![1])).toEqual(Array.from({ length: 21 }, (_, i) => (i * 5).toFixed(1)));
    expect(frames.every((f) => f.includes("\x1b[K"))).toBe(true);
    expect(text().endsWith("\n")).toBe(true);
    expect(text().slice(0, -1)).not.toContain("\n");
  });

  it("on a TTY never writes a line wider than the terminal (a wrapped line cannot be redrawn)", () => {
    const { out, text } = capture();
    const view = createProgressView(out, { tty: true, columns: 40 });
    view.update(progress(500));
    expect(text().replace("\r", "").replace("\x1b[K", "").length).toBeLessThan(40);
  });

  it("in a log prints a line per tenth of the job, not per message, and the last state", () => {
    const { out, text } = capture();
    let clock = 0;
    const view = createProgressView(out, { tty: false, now: () => clock });
    for (let signed = 0; signed <= 995; signed += 5) {
      clock += 100;
      view.update(progress(signed));
    }
    view.end();
    const printed = text().trimEnd().split("\n").map((l) => /(\d+\.\d)%/.exec(l)![1]);
    expect(printed).toEqual(["0.0", "10.0", "20.0", "30.0", "40.0", "50.0", "60.0", "70.0", "80.0", "90.0", "99.5"]);
  });

  it("in a log prints a slow job's progress at least every quiet interval", () => {
    const { out, text } = capture();
    let clock = 0;
    const view = createProgressView(out, { tty: false, now: () => clock, quietMs: 30_000 });
    for (let signed = 0; signed < 20; signed++) {
      clock += 10_000;
      view.update(progress(signed, 1_000_000));
    }
    expect(text().trimEnd().split("\n")).toHaveLength(7);
  });
});
