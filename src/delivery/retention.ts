import { sql } from 'drizzle-orm';
import { queryRows, type Db } from '../db/database';

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
 * Deletes what is older than LOG_RETENTION_DAYS: settled messages (with their deliveries and
 * attempts), attempts of messages still pending, and expired or revoked tokens. In batches, so
 * that no statement holds locks for long.
 */
export async function deleteExpiredRecords(db: Db, retentionDays: number): Promise<{ messages: number; attempts: number; tokens: number }> {
  const cutoff = sql`now() - make_interval(days => ${retentionDays})`;
  const messages = await deleteInBatches(
    db,
    // The conditions are repeated outside the subquery: a message redelivered meanwhile (PENDING
    // again) is checked anew when its row is reached, and kept.
    () => sql`with gone as (delete from webhook_gateway.messages where id in (
        select id from webhook_gateway.messages where created_at < ${cutoff} and status <> 'PENDING' limit ${BATCH})
        and status <> 'PENDING'
        returning 1) select count(*)::int as n from gone`,
  );
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
  return { messages, attempts, tokens };
}
