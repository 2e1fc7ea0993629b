import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { startVaultHost } from "./support/vault.js";

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();
afterAll(() => provider.shutdown());

describe("a canary secret", () => {
  it("never appears in logs, audit rows or traces, whatever the calls do", async () => {
    const canary = `CANARY-${randomBytes(12).toString("hex")}`;
    const name = `canary-name-${randomBytes(6).toString("hex")}`;
    let logs = "";
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logs += chunk.toString();
        done();
      },
    });
    const vault = await startVaultHost({ backend: "mysql", logger: pino({ level: "trace" }, sink) });
    try {
      const alice = vault.client("user:alice");
      const created = await alice.createSecret({ name, value: new TextEncoder().encode(canary), labels: { team: "x" } });
      const id = created.secret!.secretId;
      await alice.getSecret({ selector: { case: "name", value: name } });
      await alice.getSecret({ selector: { case: "secretId", value: id } });
      await alice.addSecretVersion({ selector: { case: "name", value: name }, value: new TextEncoder().encode(`${canary}-2`) });
      await alice.getSecretMetadata({ selector: { case: "name", value: name } });
      await alice.listSecrets({ namePrefix: "canary" });
      // Failures take other paths through logging and error mapping.
      await alice.createSecret({ name, value: new TextEncoder().encode(canary) }).catch(() => undefined);
      await vault.client("user:mallory").getSecret({ selector: { case: "secretId", value: id } }).catch(() => undefined);
      await vault.client("user:mallory").getSecret({ selector: { case: "name", value: name } }).catch(() => undefined);
      await vault.db.primary("secret_versions").where({ secret_id: id, version: 1 }).update({ ciphertext: Buffer.alloc(40, 1) });
      await alice.getSecret({ selector: { case: "secretId", value: id }, version: 1 }).catch(() => undefined);
      await vault.client("admin:root").rotateMasterKey({});
      await vault.client("admin:root").rewrap({});

      expect(logs).toContain('"msg":"rpc"'); // the log really captured the calls
      expect(logs).not.toContain(canary);
      const audit = JSON.stringify(await vault.db.primary("audit_events").select("*"));
      expect(audit.length).toBeGreaterThan(500);
      for (const plain of [canary, name, id]) expect(audit).not.toContain(plain);
      const spans = exporter.getFinishedSpans();
      expect(spans.some((s) => s.name === "keymesh.vault.v1.VaultService/GetSecret")).toBe(true);
      const traced = JSON.stringify(spans.map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })));
      expect(traced).not.toContain(canary);
      expect(traced).not.toContain(name);
    } finally {
      await vault.close();
    }
  }, 60_000);
});
