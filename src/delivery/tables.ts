import { bigint, boolean, index, integer, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';
import { messages } from '../messages/tables';

/** Every HTTP call made to deliver a message: one row per URL per attempt. */
export const deliveryAttempts = gatewaySchema.table(
  'delivery_attempts',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    messageId: uuid('message_id')
      .notNull()
      .references(() => messages.id, { onDelete: 'cascade' }),
    webhookId: text('webhook_id').notNull(),
    eventId: text('event_id').notNull(),
    url: text('url').notNull(),
    attempt: integer('attempt').notNull(),
    attemptedAt: timestamp('attempted_at', { withTimezone: true }).notNull(),
    succeeded: boolean('succeeded').notNull(),
    httpStatus: integer('http_status'),
    durationMs: integer('duration_ms').notNull(),
    error: text('error'),
    responseBody: text('response_body'),
  },
  (table) => [
    index('delivery_attempts_message_idx').on(table.messageId),
    index('delivery_attempts_webhook_idx').on(table.webhookId, table.attemptedAt),
    index('delivery_attempts_event_idx').on(table.eventId, table.attemptedAt),
  ],
);
