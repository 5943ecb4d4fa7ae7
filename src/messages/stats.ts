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

/** A sum of counts, shown as at most 2^31 - 1: counts are GraphQL `Int`s, which are 32-bit. */
const capped = (column: SQL) => sql`least(coalesce(sum(${column}), 0), 2147483647)::int`;

/** Counts over the last 30 days (by the hour) for one webhook or one event. */
export async function deliveryStats(db: Db, of: { webhookId: string } | { eventId: string }): Promise<DeliveryStats> {
  const owner = 'webhookId' in of ? sql`webhook_id = ${of.webhookId}` : sql`event_id = ${of.eventId}`;
  const [row] = await queryRows<DeliveryStats>(
    db,
    sql`select ${capped(sql`messages`)} as messages, ${capped(sql`calls`)} as calls, ${capped(sql`errors`)} as errors
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
