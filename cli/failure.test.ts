import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { describeFailure } from "./failure.js";

const ctx = { command: "sign", url: "http://127.0.0.1:8080" };
const socket = (code: string) => new ConnectError(`connect ${code}`, Code.Unavailable, undefined, undefined, Object.assign(new Error(code), { code }));

describe("describeFailure", () => {
  it.each([
    [socket("ECONNREFUSED"), "cannot reach http://127.0.0.1:8080 (connection refused) — is `npm start` running? (another address: --url or KEYMESH_URL)"],
    [socket("ENOTFOUND"), "cannot reach http://127.0.0.1:8080 (unknown host) — is `npm start` running? (another address: --url or KEYMESH_URL)"],
    [socket("ECONNRESET"), "lost the connection to http://127.0.0.1:8080 (connection reset) — is the server still running?"],
    [new ConnectError("database is down", Code.Unavailable), "the mesh at http://127.0.0.1:8080 is unavailable: database is down — retry in a moment; if it persists, check the server's log"],
    [new ConnectError("job x does not exist", Code.NotFound), "job x does not exist — check the name or id you gave"],
    [new ConnectError("count must be 1-10000000, got 0", Code.InvalidArgument), "the server refused the request: count must be 1-10000000, got 0 — see `keymesh sign --help`"],
    [new ConnectError("missing token", Code.Unauthenticated), "not signed in (missing token) — run `keymesh login`"],
    [new ConnectError("admins only", Code.PermissionDenied), "permission denied: admins only — ask an administrator for access"],
    [new ConnectError("the operation timed out", Code.DeadlineExceeded), "http://127.0.0.1:8080 did not answer in time (the operation timed out) — retry; if it persists, check the server's load and log"],
    [new ConnectError("HTTP 404", Code.Unimplemented), "http://127.0.0.1:8080 does not implement this call (HTTP 404) — is --url a keymesh mesh of this version?"],
    [new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled), "the call was cut off (http/2 stream closed with error code CANCEL (0x8)) — is the server at http://127.0.0.1:8080 still running?"],
    [new ConnectError("checksum mismatch", Code.DataLoss), "stored data is damaged: checksum mismatch — see the server's log"],
    [new ConnectError("boom", Code.Internal), "the server failed (Internal): boom — see the server's log"],
  ])("%s", (err, line) => {
    expect(describeFailure(err, ctx)).toBe(line);
  });

  it("keeps the server's message on one line and uses the caller's NotFound advice", () => {
    const text = describeFailure(new ConnectError("job x\ndoes not exist", Code.NotFound), { ...ctx, notFound: "start a new job" });
    expect(text).toBe("job x does not exist — start a new job");
  });

  it("gives every code a sentence", () => {
    for (const code of Object.values(Code).filter((c): c is Code => typeof c === "number")) {
      const text = describeFailure(new ConnectError("detail", code), ctx);
      expect(text, Code[code]).toContain("detail");
      expect(text, Code[code]).not.toContain("\n");
    }
  });
});
