import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyPurpose } from "../gen/keymesh/keys/v1/keys_pb.js";
import { openMessagesBackend, startMessagesHost, type MessagesBackend, type MessagesHost } from "./support/messages-mesh.js";

/**
 * The embedded default: master-key rotation through the RPCs, with the rewrap running on the
 * in-process queue of the keys service's own worker.
 */
describe("master-key rotation of private keys on the in-process queue", () => {
  let be: MessagesBackend;
  let h: MessagesHost;

  beforeAll(async () => {
    // No KEYMESH_MASTER_KEYS: development keys in the data directory, which rotation extends.
    be = { ...(await openMessagesBackend("sqlite+memory")), masterKeys: "" };
    h = await startMessagesHost(be);
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await be?.close();
  });

  it("rotates, rewraps every private key, keeps messages readable and refuses to retire a version in use", async () => {
    const admin = h.keysAs("admin:root");
    await admin.createKeyringKeys({ count: 30 });
    for (const u of ["ann", "ben"]) await h.keysAs(`user:${u}`).createKeyPair({ purpose: KeyPurpose.MESSAGING });
    const m = (await h.messagesAs("user:ann").sendMessage({ recipient: "ben", body: new TextEncoder().encode("before rotation") })).message!;

    const before = (await admin.getMasterKeyStatus({})).versions;
    expect(before.map((v) => [v.version, v.primary, Number(v.rowCount)])).toEqual([[1, true, 32]]);

    const rotated = await admin.rotateMasterKey({});
    expect(rotated.primaryVersion).toBe(2);
    expect(Number(rotated.enqueued)).toBe(32);

    // Version 1 cannot retire right after the rotation: other processes may still seal under it.
    const retire = await admin.retireMasterKey({ version: 1 }).then(
      () => "ok",
      (e: unknown) => ConnectError.from(e).code,
    );
    expect(retire).toBe(Code.FailedPrecondition);

    const deadline = Date.now() + 20_000;
    let status = (await admin.getMasterKeyStatus({})).versions;
    while (Number(status.find((v) => v.version === 1)?.rowCount ?? 0) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await admin.getMasterKeyStatus({})).versions;
    }
    expect(status.map((v) => [v.version, v.primary, Number(v.rowCount)])).toEqual([
      [1, false, 0],
      [2, true, 32],
    ]);
    const listed = (await h.keysAs("user:ann").listKeyPairs({})).keyPairs;
    expect(listed.every((k) => k.masterKeyVersion === 2)).toBe(true);

    const read = await h.messagesAs("user:ben").readMessage({ messageId: m.messageId });
    expect(new TextDecoder().decode(read.body)).toBe("before rotation");
    // New keys are sealed under the new primary.
    expect((await h.keysAs("user:cid").createKeyPair({ purpose: KeyPurpose.SIGNING })).keyPair!.masterKeyVersion).toBe(2);

    // No private key uses version 1 any more: once every process has picked up version 2
    // (5 s after the rotation), it retires, mesh-wide.
    await new Promise((r) => setTimeout(r, 5_000));
    const retired = await admin.retireMasterKey({ version: 1 });
    expect(retired.versions.map((v) => [v.version, v.primary, v.retired, Number(v.rowCount)])).toEqual([
      [1, false, true, 0],
      [2, true, false, 33],
    ]);
  });
});
