import { sql } from 'drizzle-orm';
import { queryRows, type Db } from '../db/database';

/** Counts shown on a webhook or an event: messages made, calls made and calls failed. */
export interface DeliveryStats {
  messages: number;
  calls: number;
  errors: number;
}

export const STATS_WINDOW_DAYS = 30;

/** Counts over the last 30 days for one webhook or one event. */
export async function deliveryStats(db: Db, of: { webhookId: string } | { eventId: string }): Promise<DeliveryStats> {
  const since = sql`now() - make_interval(days => ${STATS_WINDOW_DAYS})`;
  // Both tables name the columns alike.
  const owner = 'webhookId' in of ? sql`webhook_id = ${of.webhookId}` : sql`event_id = ${of.eventId}`;
  const [row] = await queryRows<DeliveryStats>(
    db,
    sql`select
          (select count(*)::int from webhook_gateway.messages where ${owner} and created_at >= ${since}) as messages,
          (select count(*)::int from webhook_gateway.delivery_attempts where ${owner} and attempted_at >= ${since}) as calls,
          (select count(*)::int from webhook_gateway.delivery_attempts
             where ${owner} and attempted_at >= ${since} and not succeeded) as errors`,
  );
  return row!;
}
