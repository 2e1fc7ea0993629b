import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyAlgorithm, KeyPurpose, type KeyPair } from "../../gen/keymesh/keys/v1/keys_pb.js";
import { EXIT, UsageError, type Command, type CommandIO } from "../command.js";
import { CliError, describeFailure } from "../failure.js";
import { parseFlags } from "../flags.js";
import { USER_FLAGS, USER_FLAGS_USAGE, userClients } from "../user-clients.js";

const USAGE = `Usage: keymesh keys create [--signing] [--default] [--json]
       keymesh keys list [--json]
       keymesh keys use KEY_ID

Your key pairs, kept by the keys service; private keys never leave it.
  create   a new X25519 messaging key pair (your first one becomes your messaging key);
           --signing makes an Ed25519 signing key pair instead; --default makes the new
           messaging key the one others encrypt to
  list     your key pairs: id, algorithm, purpose, public key, which one receives messages
  use      make KEY_ID (one of your messaging keys) the one others encrypt to

Options:
  --json        print JSON
${USER_FLAGS_USAGE}
  -h, --help    show this help`;

/** `keymesh keys`: create, list and choose your key pairs. */
export const keysCommand: Command = {
  name: "keys",
  summary: "create, list and choose your key pairs (messaging and signing)",
  usage: USAGE,
  run: runKeys,
};

const describe = (k: KeyPair) => ({
  keyId: k.keyId,
  algorithm: k.algorithm === KeyAlgorithm.X25519 ? "x25519" : "ed25519",
  purpose: k.purpose === KeyPurpose.MESSAGING ? "messaging" : "signing",
  publicKey: Buffer.from(k.publicKey).toString("base64"),
  messagingDefault: k.messagingDefault,
  createdAt: new Date(Number(k.createdAtMs)).toISOString(),
});

const line = (k: ReturnType<typeof describe>) =>
  `${k.keyId}  ${k.algorithm.padEnd(7)}  ${k.purpose.padEnd(9)}  ${k.publicKey}${k.messagingDefault ? "  (receives messages)" : ""}`;

async function runKeys(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    { ...USER_FLAGS, json: { type: "boolean", default: false }, signing: { type: "boolean", default: false }, default: { type: "boolean", default: false } },
    true,
  );
  const [action, ...rest] = positionals;
  const { url, client } = userClients(values, io.env);
  const keys = client(KeyManagementService);
  const print = (k: KeyPair) => io.stdout.write(values.json ? `${JSON.stringify(describe(k))}\n` : `${line(describe(k))}\n`);
  try {
    switch (action) {
      case "create": {
        if (rest.length > 0) throw new UsageError(`keys create takes no arguments, got "${rest[0]}"`);
        if (values.signing && values.default) throw new UsageError("--default applies to messaging keys, not with --signing");
        const purpose = values.signing ? KeyPurpose.SIGNING : KeyPurpose.MESSAGING;
        print((await keys.createKeyPair({ purpose, makeMessagingDefault: values.default })).keyPair!);
        return EXIT.ok;
      }
      case "list": {
        const all: KeyPair[] = [];
        let pageToken = "";
        do {
          const page = await keys.listKeyPairs({ pageToken });
          all.push(...page.keyPairs);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (values.json) io.stdout.write(`${JSON.stringify(all.map(describe), null, 2)}\n`);
        else if (all.length === 0) io.stdout.write("no key pairs yet — create one with `keymesh keys create`\n");
        else for (const k of all) print(k);
        return EXIT.ok;
      }
      case "use": {
        if (rest.length !== 1) throw new UsageError("keys use needs exactly one KEY_ID (see `keymesh keys list`)");
        print((await keys.setMessagingKey({ keyId: rest[0]! })).keyPair!);
        return EXIT.ok;
      }
      case undefined:
        throw new UsageError("say what to do: keys create, keys list or keys use KEY_ID");
      default:
        throw new UsageError(`unknown keys action "${action}" (create, list, use)`);
    }
  } catch (err) {
    if (err instanceof UsageError || err instanceof CliError) throw err;
    throw new CliError(describeFailure(err, { command: "keys", url, notFound: "see your key ids with `keymesh keys list`" }));
  }
}
