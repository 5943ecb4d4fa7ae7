import { sql, type SQL } from 'drizzle-orm';
import { queryRows, type Db } from '../db/database';

/** Counts shown on a webhook or an event: messages made, calls made and calls failed. */
export interface DeliveryStats {
  messages: number;
  calls: number;
  errors: number;
}

export const STATS_WINDOW_DAYS = 30;

/** The hour (UTC) a count belongs to, in SQL: counts are kept per webhook, event and hour. */
export const countHourOf = (time: SQL) => sql`date_trunc('hour', ${time}, 'UTC')`;

/** Counts over the last 30 days (by the hour) for one webhook or one event. */
export async function deliveryStats(db: Db, of: { webhookId: string } | { eventId: string }): Promise<DeliveryStats> {
  const owner = 'webhookId' in of ? sql`webhook_id = ${of.webhookId}` : sql`event_id = ${of.eventId}`;
  const [row] = await queryRows<DeliveryStats>(
    db,
    sql`select coalesce(sum(messages), 0)::int as messages, coalesce(sum(calls), 0)::int as calls,
          coalesce(sum(errors), 0)::int as errors
        from webhook_gateway.delivery_counts
        where ${owner} and hour >= ${countHourOf(sql`now() - make_interval(days => ${STATS_WINDOW_DAYS})`)}`,
  );
  return row!;
}

/** Counts kept longer than they are shown are deleted, with a day to spare. */
export async function deleteExpiredCounts(db: Db): Promise<number> {
  const [row] = await queryRows<{ n: number }>(
    db,
    sql`with gone as (delete from webhook_gateway.delivery_counts
          where hour < now() - make_interval(days => ${STATS_WINDOW_DAYS + 1}) returning 1)
        select count(*)::int as n from gone`,
  );
  return row?.n ?? 0;
}
