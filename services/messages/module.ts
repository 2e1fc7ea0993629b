import { MessagesService } from "../../gen/keymesh/messages/v1/messages_service_pb.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { createMessageFeed } from "./feed.js";
import { createMessagesHandler } from "./handler.js";
import { createKeysPort } from "./keys-port.js";
import { createMessages } from "./messages.js";
import { messagesMigrations } from "./migrations/index.js";
import { createMessageStore } from "./store.js";

/**
 * MessagesService as the host runs it: inboxes in the database, notifications on the
 * coordinator's topics (Redis pub/sub across processes, in-process otherwise), keys through
 * the keys service's generated client.
 */
export const messagesModule: ServiceModule = {
  name: "messages",
  desc: MessagesService,
  migrations: messagesMigrations,
  needs: { database: true, coordinator: true },
  async register(router, ctx) {
    const feed = createMessageFeed(ctx.coordinator.topics);
    const messages = createMessages({
      store: createMessageStore(ctx.db),
      keys: createKeysPort(ctx.clients.keys),
      feed,
      onFeedError: (err) => ctx.logger.warn({ err: String(err) }, "a new-message notification could not be published"),
    });
    router.service(MessagesService, createMessagesHandler(messages, feed));
  },
};
