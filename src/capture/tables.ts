import { bigint, boolean, json, text, timestamp } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';

/**
 * Row changes written by the capture trigger in the same transaction as the change itself.
 * `json` (not `jsonb`) keeps the table's column order for the receiver.
 */
export const outbox = gatewaySchema.table('outbox', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  operation: text('operation', { enum: ['INSERT', 'UPDATE', 'DELETE'] }).notNull(),
  tableName: text('table_name').notNull(),
  oldRow: json('old_row').$type<Record<string, unknown>>(),
  newRow: json('new_row').$type<Record<string, unknown>>(),
  changedAt: timestamp('changed_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * One row: whether every dispatcher is waiting for work. Capture triggers send NOTIFY only
 * then, because a transaction that notifies takes a global lock at commit; under load the
 * dispatchers are busy anyway and the triggers skip it.
 */
export const dispatcherState = gatewaySchema.table('dispatcher_state', {
  singleton: boolean('singleton').primaryKey().default(true),
  idle: boolean('idle').notNull().default(true),
});

