import { sql, type SQL } from 'drizzle-orm';
import { bigint, boolean, index, integer, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';
import { messages, type MessageStatus } from '../messages/tables';

export const DELIVERY_STATUSES = ['QUEUED', 'SENDING', 'SUCCEEDED', 'RETRY_SCHEDULED', 'DEAD', 'CANCELLED'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];
export const FINAL_STATUSES: readonly DeliveryStatus[] = ['SUCCEEDED', 'DEAD', 'CANCELLED'];
export const UNFINISHED_STATUSES = ['QUEUED', 'SENDING', 'RETRY_SCHEDULED'] as const satisfies readonly DeliveryStatus[];

/**
 * One message to one URL: the durable state of its delivery. Redis holds the work queue; this
 * table is what a lost queue is rebuilt from.
 */
export const deliveries = gatewaySchema.table(
  'deliveries',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    messageId: uuid('message_id')
      .notNull()
      .references(() => messages.id, { onDelete: 'cascade' }),
    webhookId: text('webhook_id').notNull(),
    url: text('url').notNull(),
    status: text('status', { enum: DELIVERY_STATUSES }).notNull().default('QUEUED'),
    attempts: integer('attempts').notNull().default(0),
    // Bumped by a redelivery, so that its job id differs from the earlier one's.
    generation: integer('generation').notNull().default(0),
    // Whether the delivery's job is in the queue; false ones are (re)queued by the dispatcher.
    queued: boolean('queued').notNull().default(false),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    lastHttpStatus: integer('last_http_status'),
    lastError: text('last_error'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    index('deliveries_message_idx').on(table.messageId),
    // The deliveries waiting unqueued, by webhook in creation order: the sweep takes each webhook's
    // oldest in turn, and a webhook that has some gets its new ones unqueued too, behind them.
    index('deliveries_unqueued_by_webhook_idx')
      .on(table.webhookId, table.id)
      .where(sql`not ${table.queued} and ${table.status} in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED')`),
    index('deliveries_unfinished_idx')
      .on(table.id)
      .where(sql`${table.status} in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED')`),
    // For the dead-deliveries gauge: counting them must not read the whole table.
    index('deliveries_dead_idx').on(table.id).where(sql`${table.status} = 'DEAD'`),
    // A webhook's dead deliveries, cancelled when their URL is taken off it.
    index('deliveries_dead_by_webhook_idx').on(table.webhookId).where(sql`${table.status} = 'DEAD'`),
  ],
);

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
  (table) => [index('delivery_attempts_message_idx').on(table.messageId)],
);

/**
 * A message's status, from its deliveries (it is not stored, so it cannot disagree with them):
 * pending while one is unfinished (or none was made yet), failed when one is dead, succeeded when
 * the rest did (those cancelled, to URLs taken off the webhook, aside), else cancelled. `messageId` is the message's id in the enclosing query, qualified
 * (drizzle leaves columns of a one-table query unqualified, and the subquery's `id` would win).
 */
export const messageStatusOf = (messageId: SQL): SQL<MessageStatus> => sql<MessageStatus>`(
  select case
    when count(*) = 0 or bool_or(d.status in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED')) then 'PENDING'
    when bool_or(d.status = 'DEAD') then 'FAILED'
    when bool_or(d.status = 'SUCCEEDED') then 'SUCCEEDED'
    else 'CANCELLED' end
  from webhook_gateway.deliveries d where d.message_id = ${messageId})`;
