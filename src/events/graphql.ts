import { formatApiDate } from '../dates';
import { builder } from '../graphql/builder';
import { createEvent, deleteEvent, getEvent, getEventStats, listEvents, updateEvent, type WebhookEvent } from './service';
import { EVENT_TYPES } from './tables';
import { perRequest } from '../graphql/perRequest';

const statsOf = perRequest((ctx, event: WebhookEvent) => getEventStats(ctx, event.id));

export const WebhookEventType = builder.objectRef<WebhookEvent>('WebhookEvent').implement({
  description: 'Which changes of a table fire the webhook.',
  fields: (t) => ({
    id: t.exposeID('id'),
    webhookId: t.exposeID('webhookId'),
    type: t.exposeString('type', { description: `One of ${EVENT_TYPES.join(', ')}.` }),
    status: t.exposeString('status', { description: 'Active or Inactive.' }),
    objectName: t.exposeString('objectName'),
    objectFields: t.exposeStringList('objectFields'),
    eventSources: t.exposeStringList('eventSources'),
    customPayloadFields: t.exposeStringList('customPayloadFields'),
    customPayloadTemplate: t.exposeString('customPayloadTemplate'),
    dateCreated: t.string({ resolve: (event) => formatApiDate(event.dateCreated) }),
    createdBy: t.exposeString('createdBy'),
    lastModified: t.string({ resolve: (event) => formatApiDate(event.lastModified) }),
    modifiedBy: t.exposeString('modifiedBy'),
    messages: t.int({ description: 'Messages in the last 30 days.', resolve: async (event, _, ctx) => (await statsOf(ctx, event)).messages }),
    calls: t.int({ description: 'Calls in the last 30 days.', resolve: async (event, _, ctx) => (await statsOf(ctx, event)).calls }),
    errors: t.int({ description: 'Failed calls in the last 30 days.', resolve: async (event, _, ctx) => (await statsOf(ctx, event)).errors }),
  }),
});

const eventInputFields = {
  objectFields: 'recordUpdate only: fire only when one of these columns changes; empty means any column.',
  eventSources: 'Stored and echoed (Datasheet, DataPages, DataParts, Extensions, RESTAPIs, TriggeredActions, Tasks).',
  customPayloadFields: 'Columns to put in data; empty means all.',
  customPayloadTemplate: "JSON with single quotes and [@out-hook:…] / [@field:…] placeholders, e.g. {'id': '[@field:PK_ID]'}.",
};

const CreateWebhookEventInput = builder.inputType('CreateWebhookEventInput', {
  fields: (t) => ({
    eventType: t.string({ required: true }),
    objectName: t.string({ required: true }),
    objectFields: t.stringList({ description: eventInputFields.objectFields }),
    eventSources: t.stringList({ description: eventInputFields.eventSources }),
    customPayloadFields: t.stringList({ description: eventInputFields.customPayloadFields }),
    customPayloadTemplate: t.string({ description: eventInputFields.customPayloadTemplate }),
    enabled: t.boolean(),
  }),
});

const UpdateWebhookEventInput = builder.inputType('UpdateWebhookEventInput', {
  description: 'Fields left out keep their value.',
  fields: (t) => ({
    eventType: t.string(),
    objectName: t.string(),
    objectFields: t.stringList({ description: eventInputFields.objectFields }),
    eventSources: t.stringList({ description: eventInputFields.eventSources }),
    customPayloadFields: t.stringList({ description: eventInputFields.customPayloadFields }),
    customPayloadTemplate: t.string({ description: eventInputFields.customPayloadTemplate }),
    enabled: t.boolean(),
  }),
});

builder.queryFields((t) => ({
  webhookEvents: t.field({
    type: [WebhookEventType],
    args: { webhookId: t.arg.id({ required: true }) },
    resolve: (_root, { webhookId }, ctx) => listEvents(ctx, String(webhookId)),
  }),
  webhookEvent: t.field({
    type: WebhookEventType,
    args: { webhookId: t.arg.id({ required: true }), id: t.arg.id({ required: true }) },
    resolve: (_root, { webhookId, id }, ctx) => getEvent(ctx, String(webhookId), String(id)),
  }),
}));

builder.mutationFields((t) => ({
  createWebhookEvent: t.field({
    type: WebhookEventType,
    args: { webhookId: t.arg.id({ required: true }), input: t.arg({ type: CreateWebhookEventInput, required: true }) },
    resolve: (_root, { webhookId, input }, ctx) => createEvent(ctx, String(webhookId), input),
  }),
  updateWebhookEvent: t.field({
    type: WebhookEventType,
    args: {
      webhookId: t.arg.id({ required: true }),
      id: t.arg.id({ required: true }),
      input: t.arg({ type: UpdateWebhookEventInput, required: true }),
    },
    resolve: (_root, { webhookId, id, input }, ctx) => updateEvent(ctx, String(webhookId), String(id), input),
  }),
  deleteWebhookEvent: t.boolean({
    args: { webhookId: t.arg.id({ required: true }), id: t.arg.id({ required: true }) },
    resolve: async (_root, { webhookId, id }, ctx) => {
      await deleteEvent(ctx, String(webhookId), String(id));
      return true;
    },
  }),
}));
