import { formatApiDate } from '../dates';
import { AppError } from '../errors';
import { builder } from '../graphql/builder';
import { MessageType } from '../messages/graphql';
import type { FeedItem } from './feed';
import { listAttempts, REDELIVER_FAILED_MAX, redeliverFailedMessages, redeliverMessage, watchDeliveryStatus, type DeliveryAttempt } from './service';
import type { DeliveryStatusEvent } from './status';
import { DELIVERY_STATUSES } from './tables';

const DeliveryAttemptType = builder.objectRef<DeliveryAttempt>('DeliveryAttempt').implement({
  description: 'One HTTP call made to deliver a message to one URL.',
  fields: (t) => ({
    url: t.exposeString('url'),
    attempt: t.exposeInt('attempt'),
    attemptedAt: t.string({ resolve: (attempt) => formatApiDate(attempt.attemptedAt) }),
    succeeded: t.exposeBoolean('succeeded'),
    httpStatus: t.int({ nullable: true, resolve: (attempt) => attempt.httpStatus }),
    durationMs: t.exposeInt('durationMs'),
    error: t.string({ nullable: true, resolve: (attempt) => attempt.error }),
    responseBody: t.string({ nullable: true, description: 'The first 4 KB of the answer.', resolve: (attempt) => attempt.responseBody }),
  }),
});

builder.objectField(MessageType, 'attempts', (t) =>
  t.field({
    type: [DeliveryAttemptType],
    description: 'Every call made for this message, oldest first.',
    resolve: (message, _args, ctx) => listAttempts(ctx, message.id),
  }),
);

builder.mutationFields((t) => ({
  redeliverMessage: t.field({
    type: MessageType,
    description: 'Sends the message again to every URL its webhook has now.',
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => redeliverMessage(ctx, String(id)),
  }),
  redeliverFailedMessages: t.int({
    description:
      'Sends the failed messages created since `since` (an ISO 8601 date, or date and time with its zone) again, to the URLs that ' +
      `failed and are still the webhook's: the oldest ${REDELIVER_FAILED_MAX.toLocaleString('en')} at most (call again for the next). Returns how many.`,
    args: { webhookId: t.arg.id({ required: true }), since: t.arg.string({ required: true }) },
    resolve: (_root, { webhookId, since }, ctx) => redeliverFailedMessages(ctx, String(webhookId), since),
  }),
}));

const DeliveryStatusEnum = builder.enumType('DeliveryStatus', {
  description: 'Where one delivery (a message to one URL) stands.',
  values: DELIVERY_STATUSES,
});

const DeliveryStatusEventType = builder.objectRef<DeliveryStatusEvent>('DeliveryStatusEvent').implement({
  description: 'One status change of one delivery (a message to one URL).',
  fields: (t) => ({
    messageId: t.exposeID('messageId'),
    webhookId: t.exposeID('webhookId'),
    eventId: t.exposeID('eventId'),
    url: t.exposeString('url'),
    attempt: t.exposeInt('attempt', { description: 'The attempt waiting (QUEUED), under way (SENDING) or just made.' }),
    status: t.field({ type: DeliveryStatusEnum, resolve: (event) => event.status }),
    httpStatus: t.int({ nullable: true, resolve: (event) => event.httpStatus }),
    durationMs: t.int({ nullable: true, resolve: (event) => event.durationMs }),
    error: t.string({ nullable: true, resolve: (event) => event.error }),
    nextAttemptAt: t.string({
      nullable: true,
      description: 'When the next attempt is due (RETRY_SCHEDULED).',
      resolve: (event) => event.nextAttemptAt,
    }),
    at: t.exposeString('at', { description: 'When the change happened.' }),
  }),
});

builder.subscriptionFields((t) => ({
  deliveryStatus: t.field({
    type: DeliveryStatusEventType,
    description: 'Every status change of every delivery, as it happens, in whichever gateway process; filtered by webhook and message.',
    args: { webhookId: t.arg.id(), messageId: t.arg.id() },
    subscribe: (_root, args, ctx) =>
      watchDeliveryStatus(
        ctx,
        ctx.statusFeed,
        {
          webhookId: args.webhookId == null ? undefined : String(args.webhookId),
          messageId: args.messageId == null ? undefined : String(args.messageId),
        },
        ctx.recheckAccess,
      ),
    resolve: (item: FeedItem) => {
      if (item instanceof AppError) throw item; // why the gateway ended the subscription
      return item;
    },
  }),
}));
