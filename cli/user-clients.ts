import { CLIENT_OPTIONS, CLIENT_USAGE, connectFromFlags } from "./connect.js";

type Env = Readonly<Record<string, string | undefined>>;

/** Flags of the commands that act as a user (keys, messages). */
export const USER_FLAGS = CLIENT_OPTIONS;

export const USER_FLAGS_USAGE = CLIENT_USAGE;

/** Clients acting as the user whose token the flags, the environment or `keymesh login` give. */
export function userClients(values: { url?: string | undefined; token?: string | undefined }, env: Env) {
  return connectFromFlags(values, env);
}
