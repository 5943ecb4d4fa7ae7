import { boolean, index, text, timestamp } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';
import { webhooks } from '../webhooks/tables';

export const EVENT_TYPES = ['table.recordInsert', 'table.recordUpdate', 'table.recordDelete'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Which table changes fire a webhook. */
export const webhookEvents = gatewaySchema.table(
  'webhook_events',
  {
    id: text('id').primaryKey(),
    webhookId: text('webhook_id')
      .notNull()
      .references(() => webhooks.id, { onDelete: 'cascade' }),
    eventType: text('event_type', { enum: EVENT_TYPES }).notNull(),
    objectName: text('object_name').notNull(),
    // recordUpdate only: fire when one of these columns changes; empty means any column.
    objectFields: text('object_fields').array().notNull().default([]),
    eventSources: text('event_sources').array().notNull().default([]),
    customPayloadFields: text('custom_payload_fields').array().notNull().default([]),
    customPayloadTemplate: text('custom_payload_template').notNull().default(''),
    enabled: boolean('enabled').notNull().default(true),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    createdBy: text('created_by').notNull(),
    modifiedAt: timestamp('modified_at', { withTimezone: true }).notNull().defaultNow(),
    modifiedBy: text('modified_by').notNull(),
  },
  (table) => [index('webhook_events_webhook_idx').on(table.webhookId), index('webhook_events_object_idx').on(table.objectName)],
);
