import type { Client } from "@connectrpc/connect";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import type { KeysPort } from "./messages.js";

/** The keys service as the messages service uses it: through its generated client only. */
export function createKeysPort(keys: Client<typeof KeyManagementService>): KeysPort {
  return {
    async messagingKeyOf(username) {
      const { keyPair } = await keys.getPublicKey({ selector: { case: "username", value: username } });
      if (keyPair === undefined) throw new Error("the keys service answered GetPublicKey without a key pair");
      return { keyId: keyPair.keyId, ownerId: keyPair.ownerId, publicKey: keyPair.publicKey };
    },
    async openSealedBox(box) {
      const { plaintext } = await keys.openSealedBox({
        ownerId: box.ownerId,
        keyId: box.keyId,
        encapsulatedKey: box.enc,
        ciphertext: box.ciphertext,
        info: box.info,
        associatedData: box.aad,
      });
      return plaintext;
    },
  };
}
