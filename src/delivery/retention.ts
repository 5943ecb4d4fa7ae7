import { sql, type SQL } from 'drizzle-orm';
import { queryRows, type Db } from '../db/database';
import { deleteExpiredCounts } from '../messages/stats';
import { messageStatusOf } from './tables';

const BATCH = 5000;

async function deleteInBatches(db: Db, statement: () => ReturnType<typeof sql>): Promise<number> {
  let total = 0;
  for (;;) {
    const rows = await queryRows<{ n: number }>(db, statement());
    const deleted = rows[0]?.n ?? 0;
    total += deleted;
    if (deleted < BATCH) return total;
  }
}

/**
 * Old messages no longer pending and with no attempt within the retention (a message's last
 * attempts come a day or more after it, and a redelivered one's any time later: its attempts are
 * kept as long as any other), in batches. Each batch locks its messages first, then checks again
 * that they are not pending (a statement's snapshot could miss a redelivery that was under way):
 * a redelivery locks its messages too, so it either comes first and is seen, or waits.
 */
async function deleteSettledMessages(db: Db, cutoff: SQL): Promise<number> {
  let total = 0;
  for (;;) {
    const { found, deleted } = await db.transaction(async (tx) => {
      const old = await queryRows<{ id: string }>(
        tx,
        sql`select m.id from webhook_gateway.messages m
            where m.created_at < ${cutoff} and ${messageStatusOf(sql`m.id`)} <> 'PENDING'
              and not exists (select 1 from webhook_gateway.delivery_attempts a where a.message_id = m.id and a.attempted_at >= ${cutoff})
            limit ${BATCH} for update skip locked`,
      );
      if (old.length === 0) return { found: 0, deleted: 0 };
      const [gone] = await queryRows<{ n: number }>(
        tx,
        sql`with gone as (delete from webhook_gateway.messages m
              where m.id = any(${sql.param(old.map((row) => row.id))}::uuid[]) and ${messageStatusOf(sql`m.id`)} <> 'PENDING'
              returning 1)
            select count(*)::int as n from gone`,
      );
      return { found: old.length, deleted: gone?.n ?? 0 };
    });
    total += deleted;
    if (found < BATCH) return total;
  }
}

/**
 * Deletes what is older than LOG_RETENTION_DAYS: settled messages (with their deliveries and
 * attempts), attempts of messages still pending, and expired or revoked tokens. In batches, so
 * that no statement holds locks for long. Also the hourly counts older than the 30 days shown.
 */
export async function deleteExpiredRecords(
  db: Db,
  retentionDays: number,
): Promise<{ messages: number; attempts: number; tokens: number; counts: number }> {
  const cutoff = sql`now() - make_interval(days => ${retentionDays})`;
  const messages = await deleteSettledMessages(db, cutoff);
  const attempts = await deleteInBatches(
    db,
    () => sql`with gone as (delete from webhook_gateway.delivery_attempts where id in (
        select id from webhook_gateway.delivery_attempts where attempted_at < ${cutoff} limit ${BATCH})
        returning 1) select count(*)::int as n from gone`,
  );
  const tokens = await deleteInBatches(
    db,
    () => sql`with gone as (delete from webhook_gateway.oauth_tokens where token_hash in (
        select token_hash from webhook_gateway.oauth_tokens where expires_at < now() - interval '1 day'
          or revoked_at < now() - interval '1 day' limit ${BATCH})
        returning 1) select count(*)::int as n from gone`,
  );
  return { messages, attempts, tokens, counts: await deleteExpiredCounts(db) };
}
