import { MessagesService } from "../../gen/keymesh/messages/v1/messages_service_pb.js";
import type { ServiceModule } from "../shared/server/service-module.js";

/**
 * The messages service as the host runs it. Until its handlers are written, every RPC of
 * MessagesService answers Unimplemented (connect-es fills in missing methods).
 */
export const messagesModule: ServiceModule = {
  name: "messages",
  desc: MessagesService,
  needs: { database: true },
  async register(router) {
    router.service(MessagesService, {});
  },
};
