import { AuthService, PrincipalKind } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { parseFlags } from "../flags.js";
import { EXIT, type Command } from "../command.js";
import { CLIENT_OPTIONS, CLIENT_USAGE, connectFromFlags } from "../connect.js";

const USAGE = `Usage: keymesh whoami [options]

Shows who the mesh takes you for with the credentials the CLI would send.

Options:
  --json             print JSON
${CLIENT_USAGE}`;

/** `keymesh whoami`: the principal behind the CLI's credentials. */
export const whoamiCommand: Command = {
  name: "whoami",
  summary: "show who the mesh takes you for",
  usage: USAGE,
  async run(args, io) {
    const { values } = parseFlags(args, { ...CLIENT_OPTIONS, json: { type: "boolean", default: false } });
    const { client } = connectFromFlags(values, io.env);
    const me = await client(AuthService).whoAmI({});
    const out = {
      kind: PrincipalKind[me.kind].toLowerCase(),
      id: me.principalId,
      username: me.username,
      admin: me.admin,
      expiresAt: me.expiresAtMs > 0n ? new Date(Number(me.expiresAtMs)).toISOString() : null,
    };
    if (values.json) io.stdout.write(`${JSON.stringify(out)}\n`);
    else {
      const who = out.kind === "user" ? `${out.username} (user ${out.id}${out.admin ? ", admin" : ""})` : `service ${out.id}`;
      io.stdout.write(`${who}${out.expiresAt === null ? "" : `, session until ${out.expiresAt}`}\n`);
    }
    return EXIT.ok;
  },
};
