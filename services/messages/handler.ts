import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { MessageInfoSchema, type MessageInfo, type MessagesService } from "../../gen/keymesh/messages/v1/messages_service_pb.js";
import { requireUser } from "../shared/caller.js";
import { mapErrors } from "../shared/errors.js";
import type { MessageFeed, MessageNotice } from "./feed.js";
import type { Messages } from "./messages.js";

const DEFAULT_PAGE = 50;
const MAX_PAGE = 500;

const toInfo = (m: MessageNotice): MessageInfo =>
  create(MessageInfoSchema, {
    messageId: m.id,
    sender: m.senderUsername,
    recipient: m.recipientUsername,
    sentAtMs: BigInt(m.sentAt),
    read: m.read,
    size: m.size,
  });

/** MessagesService: every RPC acts for the logged-in user on their own inbox (access: user). */
export function createMessagesHandler(messages: Messages, feed: MessageFeed): ServiceImpl<typeof MessagesService> {
  return {
    sendMessage: mapErrors(async (req, ctx) => {
      const user = requireUser(ctx);
      return { message: toInfo(await messages.send(user, req.recipient, req.body)) };
    }),

    listMessages: mapErrors(async (req, ctx) => {
      const user = requireUser(ctx);
      const size = req.pageSize === 0 ? DEFAULT_PAGE : Math.min(req.pageSize, MAX_PAGE);
      const page = await messages.list(user, req.pageToken, size, req.unreadOnly);
      return { messages: page.rows.map(toInfo), nextPageToken: page.next };
    }),

    readMessage: mapErrors(async (req, ctx) => {
      const user = requireUser(ctx);
      const { row, body } = await messages.read(user, req.messageId);
      return { message: toInfo(row), body };
    }),

    deleteMessage: mapErrors(async (req, ctx) => {
      await messages.delete(requireUser(ctx), req.messageId);
      return {};
    }),

    async *watchMessages(_req, ctx) {
      const user = requireUser(ctx);
      for await (const notice of feed.watch(user.userId, ctx.signal)) yield { message: toInfo(notice) };
    },
  };
}
