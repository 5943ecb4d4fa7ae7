import { boolean, index, integer, jsonb, text, timestamp } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';

/** A secret replaced by a rotation, and when it stops signing (ISO 8601). */
export interface PreviousSecret {
  secret: string;
  expiresAt: string;
}

export const webhooks = gatewaySchema.table('webhooks', {
  id: text('id').primaryKey(),
  name: text('name').notNull().unique('webhooks_name_unique'),
  description: text('description').notNull().default(''),
  callThrottling: integer('call_throttling').notNull(),
  // Bumped when CallThrottling changes: the webhook's waiting deliveries are booked afresh, on a
  // new throttle clock (the old one runs far ahead under the old limit).
  throttleEpoch: integer('throttle_epoch').notNull().default(0),
  enabled: boolean('enabled').notNull().default(true),
  defaultPayloadIncludesSecret: boolean('default_payload_includes_secret').notNull().default(false),
  secret: text('secret').notNull(),
  // The secrets replaced by rotations, newest first: each signs until its expiresAt, and is kept
  // after that to be hidden from read-only profiles (see afterRotation).
  previousSecrets: jsonb('previous_secrets').$type<PreviousSecret[]>().notNull().default([]),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  createdBy: text('created_by').notNull(),
  modifiedAt: timestamp('modified_at', { withTimezone: true }).notNull().defaultNow(),
  modifiedBy: text('modified_by').notNull(),
});

/** One row per target URL; the primary key makes a URL belong to one webhook only. */
export const webhookUrls = gatewaySchema.table(
  'webhook_urls',
  {
    url: text('url').primaryKey(),
    webhookId: text('webhook_id')
      .notNull()
      .references(() => webhooks.id, { onDelete: 'cascade' }),
    position: integer('position').notNull(),
  },
  (table) => [index('webhook_urls_webhook_idx').on(table.webhookId, table.position)],
);
