import { formatApiDate } from '../dates';
import { builder } from '../graphql/builder';
import { DEFAULT_PAGE_SIZE, getMessage, listMessages, MAX_PAGE_SIZE, type Message, type MessagePage } from './service';
import { MESSAGE_STATUSES } from './tables';

const MessageStatusEnum = builder.enumType('MessageStatus', {
  description: 'PENDING while a delivery is under way, then FAILED if one gave up, else SUCCEEDED; CANCELLED when every URL was taken off the webhook first.',
  values: MESSAGE_STATUSES,
});

export const MessageType = builder.objectRef<Message>('Message').implement({
  description: 'One changed row for one matching event: the body every URL of the webhook receives.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The messageId, also the webhook-id header receivers deduplicate on.' }),
    webhookId: t.exposeID('webhookId'),
    eventId: t.exposeID('eventId'),
    eventType: t.exposeString('eventType'),
    objectName: t.exposeString('objectName'),
    status: t.field({ type: MessageStatusEnum, resolve: (message) => message.status }),
    body: t.exposeString('body', { description: 'The JSON body, exactly as sent.' }),
    eventDate: t.string({ resolve: (message) => formatApiDate(message.eventDate) }),
    dateCreated: t.string({ resolve: (message) => formatApiDate(message.dateCreated) }),
  }),
});

const MessageEdge = builder.objectRef<Message>('MessageEdge').implement({
  fields: (t) => ({
    cursor: t.exposeString('cursor'),
    node: t.field({ type: MessageType, resolve: (message) => message }),
  }),
});

const PageInfo = builder.objectRef<MessagePage>('PageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage'),
    endCursor: t.string({ nullable: true, resolve: (page) => page.endCursor }),
  }),
});

const MessageConnection = builder.objectRef<MessagePage>('MessageConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [MessageEdge], resolve: (page) => page.messages }),
    pageInfo: t.field({ type: PageInfo, resolve: (page) => page }),
  }),
});

builder.queryFields((t) => ({
  messages: t.field({
    type: MessageConnection,
    description: "A webhook's messages, newest first.",
    args: {
      webhookId: t.arg.id({ required: true }),
      status: t.arg({ type: MessageStatusEnum }),
      first: t.arg.int({ description: `Page size, 1 to ${MAX_PAGE_SIZE} (default ${DEFAULT_PAGE_SIZE}).` }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
    },
    resolve: (_root, args, ctx) =>
      listMessages(ctx, { webhookId: String(args.webhookId), status: args.status, first: args.first, after: args.after }),
  }),
  message: t.field({
    type: MessageType,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => getMessage(ctx, String(id)),
  }),
}));
