import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { parseFlags } from "../flags.js";
import { EXIT, type Command } from "../command.js";
import { connectTo, meshUrl } from "../connect.js";
import { forgetSession, storedSession } from "../credentials.js";

const USAGE = `Usage: keymesh logout [--url URL]

Revokes the session \`keymesh login\` stored for this mesh URL and forgets it.`;

/** `keymesh logout`: revokes and forgets the stored session. */
export const logoutCommand: Command = {
  name: "logout",
  summary: "revoke the stored session token and forget it",
  usage: USAGE,
  async run(args, io) {
    const { values } = parseFlags(args, { url: { type: "string" } });
    const url = meshUrl(values.url, io.env);
    const session = storedSession(io.env, url, 0);
    if (session === undefined) {
      io.stdout.write(`not logged in to ${url}\n`);
      return EXIT.ok;
    }
    try {
      await connectTo(url, session.token, io.env)(AuthService).logout({});
    } catch (err) {
      // An expired or already revoked session is as good as logged out.
      if (ConnectError.from(err).code !== Code.Unauthenticated) throw err;
    }
    forgetSession(io.env, url);
    io.stdout.write(`logged out ${session.username} from ${url}\n`);
    return EXIT.ok;
  },
};
