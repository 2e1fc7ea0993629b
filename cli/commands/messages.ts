import { readFile } from "node:fs/promises";
import { MessagesService, type MessageInfo } from "../../gen/keymesh/messages/v1/messages_service_pb.js";
import { EXIT, UsageError, type Command, type CommandIO } from "../command.js";
import { CliError, describeFailure } from "../failure.js";
import { parseFlags } from "../flags.js";
import { listenForInterrupt } from "../interrupt.js";
import { USER_FLAGS, USER_FLAGS_USAGE, userClients } from "../user-clients.js";

const USAGE = `Usage: keymesh messages send USER [TEXT | --file F]
       keymesh messages inbox [--unread] [--limit N] [--json]
       keymesh messages read ID [--json]
       keymesh messages delete ID
       keymesh messages watch [--json]

Messages encrypted to the recipient's messaging key (HPKE: X25519, HKDF-SHA256, AES-256-GCM);
the server keeps only ciphertext and only the recipient can read a message.
  send     TEXT, the contents of --file F (at most 64 KiB), or standard input when neither is given
  inbox    your messages, newest first (* marks unread ones)
  read     print one message (and mark it read)
  delete   remove one of your messages
  watch    print new messages as they arrive, until Ctrl-C

Options:
  --file F      send the contents of file F
  --unread      only unread messages
  --limit N     at most N messages (default 50)
  --json        print JSON
${USER_FLAGS_USAGE}
  -h, --help    show this help`;

/** `keymesh messages`: send, list, read, delete and watch encrypted messages. */
export const messagesCommand: Command = {
  name: "messages",
  summary: "send, list, read and watch encrypted messages",
  usage: USAGE,
  run: runMessages,
};

const info = (m: MessageInfo) => ({
  messageId: m.messageId,
  sender: m.sender,
  recipient: m.recipient,
  sentAt: new Date(Number(m.sentAtMs)).toISOString(),
  read: m.read,
  size: m.size,
});

const line = (m: MessageInfo) => `${m.read ? " " : "*"} ${m.messageId}  ${new Date(Number(m.sentAtMs)).toISOString()}  from ${m.sender}  ${m.size} bytes`;

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function runMessages(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    {
      ...USER_FLAGS,
      json: { type: "boolean", default: false },
      unread: { type: "boolean", default: false },
      file: { type: "string" },
      limit: { type: "string" },
    },
    true,
  );
  const [action, ...rest] = positionals;
  const { url, client } = userClients(values, io.env);
  const messages = client(MessagesService);
  const fail = (err: unknown): never => {
    if (err instanceof UsageError || err instanceof CliError) throw err;
    const notFound = action === "send" ? "the recipient needs a messaging key: they run `keymesh keys create`" : "see your message ids with `keymesh messages inbox`";
    throw new CliError(describeFailure(err, { command: "messages", url, notFound }));
  };
  try {
    switch (action) {
      case "send": {
        const [to, textArg, ...extra] = rest;
        if (to === undefined) throw new UsageError("messages send needs a USER");
        if (extra.length > 0 || (textArg !== undefined && values.file !== undefined)) throw new UsageError("give the message as one TEXT argument or --file F, not both");
        const body =
          textArg !== undefined ? Buffer.from(textArg, "utf8") : values.file !== undefined ? await readFile(values.file).catch((e: Error) => { throw new CliError(`cannot read ${values.file}: ${e.message}`); }) : await readStdin();
        const sent = (await messages.sendMessage({ recipient: to, body })).message!;
        io.stdout.write(values.json ? `${JSON.stringify(info(sent))}\n` : `sent ${sent.messageId} to ${sent.recipient} (${sent.size} bytes)\n`);
        return EXIT.ok;
      }
      case "inbox": {
        const limit = values.limit === undefined ? 50 : Number(values.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new UsageError("--limit must be a whole number from 1 to 500");
        const page = await messages.listMessages({ pageSize: limit, unreadOnly: values.unread });
        if (values.json) io.stdout.write(`${JSON.stringify(page.messages.map(info), null, 2)}\n`);
        else if (page.messages.length === 0) io.stdout.write(values.unread ? "no unread messages\n" : "no messages\n");
        else for (const m of page.messages) io.stdout.write(`${line(m)}\n`);
        return EXIT.ok;
      }
      case "read": {
        if (rest.length !== 1) throw new UsageError("messages read needs exactly one message ID");
        const res = await messages.readMessage({ messageId: rest[0]! });
        const m = res.message!;
        if (values.json) io.stdout.write(`${JSON.stringify({ ...info(m), body: Buffer.from(res.body).toString("utf8") })}\n`);
        else {
          io.stdout.write(`From: ${m.sender}\nDate: ${new Date(Number(m.sentAtMs)).toISOString()}\n\n`);
          io.stdout.write(res.body);
          io.stdout.write("\n");
        }
        return EXIT.ok;
      }
      case "delete": {
        if (rest.length !== 1) throw new UsageError("messages delete needs exactly one message ID");
        await messages.deleteMessage({ messageId: rest[0]! });
        io.stdout.write(`deleted ${rest[0]}\n`);
        return EXIT.ok;
      }
      case "watch": {
        const interrupt = listenForInterrupt();
        try {
          const stream = messages.watchMessages({}, { signal: interrupt.signal })[Symbol.asyncIterator]();
          // The first read starts the call.
          const first = stream.next();
          io.stderr.write("watching for new messages (Ctrl-C to stop)\n");
          for (let r = await first; r.done !== true; r = await stream.next()) {
            const res = r.value;
            io.stdout.write(values.json ? `${JSON.stringify(info(res.message!))}\n` : `${line(res.message!)}\n`);
          }
        } catch (err) {
          // Ctrl-C cancels the stream; whatever error that surfaces as is the expected end.
          if (!interrupt.signal.aborted) throw err;
        } finally {
          interrupt.dispose();
        }
        if (interrupt.signal.aborted) return interrupt.exitCode();
        throw new CliError("the server ended the watch (it may be shutting down) — run `keymesh messages watch` again");
      }
      case undefined:
        throw new UsageError("say what to do: messages send, inbox, read, delete or watch");
      default:
        throw new UsageError(`unknown messages action "${action}" (send, inbox, read, delete, watch)`);
    }
  } catch (err) {
    return fail(err);
  }
}
