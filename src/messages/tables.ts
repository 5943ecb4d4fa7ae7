import { bigint, index, integer, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';
import { webhooks } from '../webhooks/tables';

/** A message's status follows from its deliveries' (messageStatusOf), and is not stored. */
export const MESSAGE_STATUSES = ['PENDING', 'SUCCEEDED', 'FAILED', 'CANCELLED'] as const;
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

/** One message per changed row per matching event: the body every URL of the webhook receives. */
export const messages = gatewaySchema.table(
  'messages',
  {
    id: uuid('id').primaryKey(),
    // Creation order, for paging and for sending in order.
    seq: bigint('seq', { mode: 'number' }).notNull().generatedAlwaysAsIdentity(),
    webhookId: text('webhook_id')
      .notNull()
      .references(() => webhooks.id, { onDelete: 'cascade' }),
    // Kept when the event is deleted: a message outlives the definition that made it.
    eventId: text('event_id').notNull(),
    eventType: text('event_type').notNull(),
    objectName: text('object_name').notNull(),
    body: text('body').notNull(),
    eventDate: timestamp('event_date', { withTimezone: true }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    index('messages_webhook_seq_idx').on(table.webhookId, table.seq),
    index('messages_created_idx').on(table.createdAt),
  ],
);

/**
 * Messages made and calls made and failed, per webhook, event and hour (UTC): what the Messages,
 * Calls and Errors of a webhook or an event (last 30 days) are read from. Kept by the statements
 * that write the messages and the attempts, so reading them never counts rows.
 */
export const deliveryCounts = gatewaySchema.table(
  'delivery_counts',
  {
    webhookId: text('webhook_id')
      .notNull()
      .references(() => webhooks.id, { onDelete: 'cascade' }),
    eventId: text('event_id').notNull(),
    hour: timestamp('hour', { withTimezone: true }).notNull(),
    messages: integer('messages').notNull().default(0),
    calls: integer('calls').notNull().default(0),
    errors: integer('errors').notNull().default(0),
  },
  (table) => [
    primaryKey({ columns: [table.webhookId, table.eventId, table.hour] }),
    index('delivery_counts_event_idx').on(table.eventId, table.hour),
  ],
);
