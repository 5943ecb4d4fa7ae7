import { formatApiDate } from '../dates';
import { builder } from '../graphql/builder';
import { MessageType } from '../messages/graphql';
import { listAttempts, redeliverFailedMessages, redeliverMessage, type DeliveryAttempt } from './service';

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
    description: 'Sends the message again to every URL of its webhook.',
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => redeliverMessage(ctx, String(id)),
  }),
  redeliverFailedMessages: t.int({
    description: 'Sends the failed messages created since `since` (ISO 8601) again, to the URLs that failed. Returns how many.',
    args: { webhookId: t.arg.id({ required: true }), since: t.arg.string({ required: true }) },
    resolve: (_root, { webhookId, since }, ctx) => redeliverFailedMessages(ctx, String(webhookId), since),
  }),
}));
