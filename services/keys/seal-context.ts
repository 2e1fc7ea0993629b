import type { SealContext } from "../shared/crypto/envelope.js";

/**
 * Where a keyring private key is sealed, for the envelope's associated data. The key service
 * owns it: it seals with it, and the signing service (the only one that opens these keys)
 * imports it from here. Changing it would make every stored key unopenable, so it keeps
 * naming the row the key was sealed for: table `keyring_keys`, column `private_key`, key id.
 */
export const keyringSealContext = (id: string): SealContext => ({ table: "keyring_keys", column: "private_key", id });
