import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { parseFlags } from "../flags.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { connectTo, meshUrl } from "../connect.js";
import { readPassword } from "../password.js";

const USAGE = `Usage: keymesh register USERNAME [options]

Creates a user. Usernames are 3-64 characters of lowercase letters, digits, '.', '_' and '-';
passwords at least 12 bytes. The password is read without echo from the terminal (twice), or
from the first line of stdin with --password-stdin.

Options:
  --password-stdin   read the password from stdin
  --url URL          the mesh (default $KEYMESH_URL or http://127.0.0.1:8080)`;

/** `keymesh register USERNAME`: creates a user. */
export const registerCommand: Command = {
  name: "register",
  summary: "create a user (password from the terminal or --password-stdin)",
  usage: USAGE,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, { "password-stdin": { type: "boolean", default: false }, url: { type: "string" } }, true);
    const [username, ...extra] = positionals;
    if (username === undefined || extra.length > 0) throw new UsageError("expected exactly one USERNAME");
    const password = await readPassword(io, { fromStdin: values["password-stdin"], confirm: true });
    const auth = connectTo(meshUrl(values.url, io.env), undefined, io.env)(AuthService);
    const res = await auth.register({ username, password });
    io.stdout.write(`registered ${res.username} (user id ${res.userId}); log in with \`keymesh login ${res.username}\`\n`);
    return EXIT.ok;
  },
};
