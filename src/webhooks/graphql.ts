import { formatApiDate } from '../dates';
import { builder } from '../graphql/builder';
import { perRequest } from '../graphql/perRequest';
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  getWebhookStats,
  listWebhooks,
  regenerateWebhookSecret,
  updateWebhook,
  type Webhook,
} from './service';

const statsOf = perRequest((ctx, webhook: Webhook) => getWebhookStats(ctx, webhook.id));

export const OutgoingWebhookType = builder.objectRef<Webhook>('OutgoingWebhook').implement({
  description: 'An outgoing webhook: where messages go, how they are signed and how fast they may be sent.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    description: t.exposeString('description'),
    outgoingUrls: t.exposeStringList('outgoingUrls'),
    callThrottling: t.exposeInt('callThrottling', { description: 'Calls per second across all URLs.' }),
    enabled: t.exposeBoolean('enabled'),
    defaultPayloadIncludesSecret: t.exposeBoolean('defaultPayloadIncludesSecret'),
    secret: t.string({
      nullable: true,
      description: 'The signing secret; null for profiles without webhooks:write.',
      resolve: (webhook) => webhook.secret ?? null,
    }),
    dateCreated: t.string({ resolve: (webhook) => formatApiDate(webhook.dateCreated) }),
    createdBy: t.exposeString('createdBy'),
    lastModified: t.string({ resolve: (webhook) => formatApiDate(webhook.lastModified) }),
    modifiedBy: t.exposeString('modifiedBy'),
    events: t.int({ description: 'Events defined on the webhook.', resolve: async (webhook, _, ctx) => (await statsOf(ctx, webhook)).events }),
    messages: t.int({ description: 'Messages in the last 30 days.', resolve: async (webhook, _, ctx) => (await statsOf(ctx, webhook)).messages }),
    calls: t.int({ description: 'Calls in the last 30 days.', resolve: async (webhook, _, ctx) => (await statsOf(ctx, webhook)).calls }),
    errors: t.int({ description: 'Failed calls in the last 30 days.', resolve: async (webhook, _, ctx) => (await statsOf(ctx, webhook)).errors }),
  }),
});

const CreateOutgoingWebhookInput = builder.inputType('CreateOutgoingWebhookInput', {
  fields: (t) => ({
    name: t.string({ required: true }),
    description: t.string(),
    outgoingUrls: t.stringList({ required: true }),
    callThrottling: t.int({ description: 'Calls per second; omitted or 0 means CALL_THROTTLING_MAX.' }),
    enabled: t.boolean(),
    defaultPayloadIncludesSecret: t.boolean(),
  }),
});

const UpdateOutgoingWebhookInput = builder.inputType('UpdateOutgoingWebhookInput', {
  description: 'Fields left out keep their value.',
  fields: (t) => ({
    name: t.string(),
    description: t.string(),
    outgoingUrls: t.stringList(),
    callThrottling: t.int(),
    enabled: t.boolean(),
    defaultPayloadIncludesSecret: t.boolean(),
  }),
});

builder.queryFields((t) => ({
  outgoingWebhooks: t.field({
    type: [OutgoingWebhookType],
    resolve: (_root, _args, ctx) => listWebhooks(ctx),
  }),
  outgoingWebhook: t.field({
    type: OutgoingWebhookType,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => getWebhook(ctx, String(id)),
  }),
}));

builder.mutationFields((t) => ({
  createOutgoingWebhook: t.field({
    type: OutgoingWebhookType,
    args: { input: t.arg({ type: CreateOutgoingWebhookInput, required: true }) },
    resolve: (_root, { input }, ctx) => createWebhook(ctx, input),
  }),
  updateOutgoingWebhook: t.field({
    type: OutgoingWebhookType,
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateOutgoingWebhookInput, required: true }) },
    resolve: (_root, { id, input }, ctx) => updateWebhook(ctx, String(id), input),
  }),
  deleteOutgoingWebhook: t.boolean({
    description: 'Deletes the webhook and everything that belongs to it.',
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, ctx) => {
      await deleteWebhook(ctx, String(id));
      return true;
    },
  }),
  regenerateWebhookSecret: t.field({
    type: OutgoingWebhookType,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => regenerateWebhookSecret(ctx, String(id)),
  }),
}));
