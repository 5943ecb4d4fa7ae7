import { and, asc, eq, gte, inArray, sql, type SQL } from 'drizzle-orm';
import { requirePermission } from '../auth/principal';
import { OUTBOX_CHANNEL } from '../capture/triggers';
import type { ServiceContext } from '../context';
import { queryRows, type Db } from '../db/database';
import { retryOnDeadlock } from '../db/errors';
import { AppError } from '../errors';
import { getMessage, secretHider, type Message } from '../messages/service';
import { messages } from '../messages/tables';
import { getWebhook } from '../webhooks/service';
import { webhooks } from '../webhooks/tables';
import type { StatusFeed, StatusFilter, StatusSubscription } from './feed';
import { holdSweeps } from './queue';
import type { DeliveryIdentity } from './status';
import { deliveries, deliveryAttempts, messageStatusOf, UNFINISHED_STATUSES } from './tables';

export interface DeliveryAttempt {
  url: string;
  attempt: number;
  attemptedAt: Date;
  succeeded: boolean;
  httpStatus: number | null;
  durationMs: number;
  error: string | null;
  responseBody: string | null;
}

/** A delivery's URL is still one of its webhook's (qualified: drizzle leaves an update's own columns bare). */
const toCurrentUrl = sql`webhook_gateway.deliveries.url in (
  select u.url from webhook_gateway.webhook_urls u where u.webhook_id = webhook_gateway.deliveries.webhook_id)`;

/**
 * Queues the deliveries to the webhook's current URLs again under a new generation (and, with
 * `toNewUrls`, adds deliveries to the URLs the webhook gained since); the dispatcher hands them
 * to the queue. A new series of attempts: numbered from 1 again, with the whole retry schedule
 * ahead of it. Their messages are locked first (retention deletes a message only with no
 * delivery pending, and checks that after locking it). Returns the messages queued again.
 */
async function requeue(db: Db, messageIds: string[], where?: SQL, { toNewUrls = false } = {}): Promise<string[]> {
  if (messageIds.length === 0) return [];
  const ids = sql.param(messageIds);
  await db.execute(sql`select 1 from webhook_gateway.messages where id = any(${ids}::uuid[]) order by id for no key update`);
  const queued = await db
    .update(deliveries)
    .set({
      status: 'QUEUED',
      generation: sql`${deliveries.generation} + 1`,
      attempts: 0,
      queued: false,
      nextAttemptAt: new Date(),
      updatedAt: new Date(),
    })
    .where(and(inArray(deliveries.messageId, messageIds), toCurrentUrl, where))
    .returning({ messageId: deliveries.messageId });
  if (toNewUrls) {
    const added = await queryRows<{ message_id: string }>(
      db,
      sql`insert into webhook_gateway.deliveries (message_id, webhook_id, url, queued)
        select m.id, m.webhook_id, u.url, false
        from webhook_gateway.messages m join webhook_gateway.webhook_urls u on u.webhook_id = m.webhook_id
        where m.id = any(${ids}::uuid[])
          and not exists (select 1 from webhook_gateway.deliveries d where d.message_id = m.id and d.url = u.url)
        order by m.id, u.position
        returning message_id`,
    );
    queued.push(...added.map((row) => ({ messageId: row.message_id })));
  }
  // Wakes a waiting dispatcher, so the handover does not wait for its next poll.
  await db.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
  return [...new Set(queued.map((row) => row.messageId))];
}

/**
 * After a change of the webhook's CallThrottling (in the same transaction, which also bumps its
 * throttle epoch and holds sweeps off, see holdSweeps): its waiting deliveries, retries
 * included, get a new generation and are marked unqueued, so that the dispatcher books them
 * afresh, in order, on the new epoch's clock (and removes their old jobs, booked on the old
 * limit's clock, a backlog's far into the future). A call under way meanwhile may be made twice
 * (at least once; both attempts are logged).
 */
export async function rebookWaitingDeliveries(db: Db, webhookId: string): Promise<void> {
  await db
    .update(deliveries)
    .set({ generation: sql`${deliveries.generation} + 1`, queued: false, updatedAt: new Date() })
    .where(and(eq(deliveries.webhookId, webhookId), inArray(deliveries.status, UNFINISHED_STATUSES)));
  await db.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
}

/**
 * Redis knows a newer throttle epoch for the webhook than Postgres, which only a Postgres
 * restored from a backup (Redis keeping its keys) can make: the permits refuse every slot booked
 * in Postgres' epoch. The epoch moves past Redis' (a new clock and lines, never used) and the
 * waiting deliveries are booked afresh in it, as after a change of the limit; the row is locked
 * as updateWebhook locks it, against a dispatcher batch reading the epoch meanwhile. Only from
 * `seenEpoch`, the one the refused caller read as current: if it moved since, whoever moved it
 * rebooked the caller's delivery too. Returns whether it moved.
 */
export async function catchUpThrottleEpoch(db: Db, webhookId: string, seenEpoch: number, redisEpoch: number): Promise<boolean> {
  // The deliveries to rebook before the webhook's row, as the attempt recorder takes them (see
  // lockUnfinishedDeliveries); should it meet it still, the loser tries again.
  return retryOnDeadlock(() =>
    db.transaction(async (tx) => {
      await holdSweeps(tx);
      await lockUnfinishedDeliveries(tx, webhookId);
      const [row] = await tx.select({ epoch: webhooks.throttleEpoch }).from(webhooks).where(eq(webhooks.id, webhookId)).for('update');
      if (!row || row.epoch !== seenEpoch || row.epoch >= redisEpoch) return false;
      await tx.update(webhooks).set({ throttleEpoch: redisEpoch + 1 }).where(eq(webhooks.id, webhookId));
      await rebookWaitingDeliveries(tx, webhookId);
      return true;
    }),
  );
}

/** Sends a message again to every URL its webhook has now. */
export async function redeliverMessage(ctx: ServiceContext, messageId: string): Promise<Message> {
  requirePermission(ctx.principal, 'webhooks:write');
  const message = await getMessage(ctx, messageId);
  await ctx.db.transaction((tx) => requeue(tx, [message.id], undefined, { toNewUrls: true }));
  return getMessage(ctx, messageId);
}

/** A date, or a date and time with its zone (`Z` or an offset): a time without one would be read in the server's zone. */
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}))?$/;
/** Failed messages one redeliverFailedMessages sends again at most; a call again takes the next (those sent are pending then). */
export const REDELIVER_FAILED_MAX = 10_000;

/**
 * Sends the failed messages of a webhook created since `since` again (the oldest first, up to
 * REDELIVER_FAILED_MAX), to the URLs that failed and the webhook still has. Returns how many.
 */
export async function redeliverFailedMessages(ctx: ServiceContext, webhookId: string, since: unknown): Promise<number> {
  requirePermission(ctx.principal, 'webhooks:write');
  await getWebhook(ctx, webhookId);
  const from = typeof since === 'string' && ISO_DATE.test(since) ? new Date(since) : undefined;
  if (!from || Number.isNaN(from.getTime())) {
    throw new AppError('IncorrectBodyParameter', 'must be an ISO 8601 date, or date and time with its zone (2026-01-31T09:00:00Z)', 'since');
  }
  return ctx.db.transaction(async (tx) => {
    const failed = await tx
      .select({ id: messages.id })
      .from(messages)
      .where(and(eq(messages.webhookId, webhookId), gte(messages.createdAt, from), sql`${messageStatusOf(sql`webhook_gateway.messages.id`)} = 'FAILED'`))
      .orderBy(asc(messages.seq))
      .limit(REDELIVER_FAILED_MAX);
    // A redelivery of the same messages committed meanwhile has queued their dead deliveries
    // already: those are not queued twice, nor counted.
    const queued = await requeue(
      tx,
      failed.map((message) => message.id),
      eq(deliveries.status, 'DEAD'),
    );
    return queued.length;
  });
}

/** The message's attempts, oldest first; a receiver's answer that echoed the secret shows it hidden to read-only profiles. */
export async function listAttempts(ctx: ServiceContext, messageId: string): Promise<DeliveryAttempt[]> {
  requirePermission(ctx.principal, 'webhooks:read');
  const rows = await ctx.db
    .select({
      webhookId: deliveryAttempts.webhookId,
      url: deliveryAttempts.url,
      attempt: deliveryAttempts.attempt,
      attemptedAt: deliveryAttempts.attemptedAt,
      succeeded: deliveryAttempts.succeeded,
      httpStatus: deliveryAttempts.httpStatus,
      durationMs: deliveryAttempts.durationMs,
      error: deliveryAttempts.error,
      responseBody: deliveryAttempts.responseBody,
    })
    .from(deliveryAttempts)
    .where(eq(deliveryAttempts.messageId, messageId))
    .orderBy(asc(deliveryAttempts.attemptedAt), asc(deliveryAttempts.id));
  const hide = await secretHider(ctx, rows.map((row) => row.webhookId));
  return rows.map(({ webhookId, ...attempt }) => ({
    ...attempt,
    responseBody: attempt.responseBody === null ? null : hide(webhookId, attempt.responseBody),
  }));
}

/**
 * Live status changes of the deliveries the filter picks (all, a webhook's, or a message's).
 * With `recheckAccess` (a stream over HTTP) the caller's token is checked again every
 * TOKEN_RECHECK_INTERVAL and when it expires, and the stream ends with the reason once it no
 * longer holds; a WebSocket connection does the same for all its operations.
 */
export async function watchDeliveryStatus(
  ctx: ServiceContext,
  feed: StatusFeed,
  filter: StatusFilter,
  recheckAccess?: () => Promise<unknown>,
): Promise<StatusSubscription> {
  requirePermission(ctx.principal, 'webhooks:read');
  if (filter.webhookId !== undefined) await getWebhook(ctx, filter.webhookId);
  if (filter.messageId !== undefined) {
    const message = await getMessage(ctx, filter.messageId);
    if (filter.webhookId !== undefined && message.webhookId !== filter.webhookId) {
      throw new AppError('ObjectNotFound', `Message '${filter.messageId}' does not belong to webhook '${filter.webhookId}'`);
    }
  }
  const subscription = await feed.open(filter);
  if (recheckAccess) subscription.keepCheckingAccess(recheckAccess, ctx.config.tokenRecheckMs, ctx.principal.tokenExpiresAt);
  return subscription;
}

/** Live cancellation notices sent when a webhook is deleted, or URLs are removed from it, stop at this many deliveries. */
const MAX_CANCELLED_NOTICES = 1000;

/**
 * A webhook's deliveries not yet done (those `where` picks, if given), oldest first: what deleting
 * it cancels, or taking their URLs off it.
 */
export async function unfinishedDeliveries(db: Db, webhookId: string, where?: SQL): Promise<(DeliveryIdentity & { attempts: number })[]> {
  return db
    .select({
      messageId: deliveries.messageId,
      webhookId: deliveries.webhookId,
      eventId: messages.eventId,
      url: deliveries.url,
      attempts: deliveries.attempts,
    })
    .from(deliveries)
    .innerJoin(messages, eq(messages.id, deliveries.messageId))
    .where(and(eq(deliveries.webhookId, webhookId), inArray(deliveries.status, UNFINISHED_STATUSES), where))
    .orderBy(asc(deliveries.id))
    .limit(MAX_CANCELLED_NOTICES);
}

/**
 * Locks the webhook's deliveries whose attempts may be being recorded, in id order. The attempt
 * recorder changes a delivery, then (its attempt's and count's foreign keys) locks the message
 * and webhook: a transaction that deletes the webhook's messages or locks its row, and then
 * changes its deliveries, takes them in the opposite order and deadlocks with it. Taking the
 * deliveries first waits for the records being written instead.
 */
export async function lockUnfinishedDeliveries(db: Db, webhookId: string): Promise<void> {
  await db
    .select({ id: deliveries.id })
    .from(deliveries)
    .where(and(eq(deliveries.webhookId, webhookId), inArray(deliveries.status, UNFINISHED_STATUSES)))
    .orderBy(asc(deliveries.id))
    .for('update');
}

/**
 * Cancels the webhook's deliveries not yet done to URLs it no longer has, under a new generation,
 * so that an attempt under way meanwhile is logged but schedules no retry; and those dead: no
 * redelivery can reach that URL any more, and their messages would stay FAILED for good. Returns
 * the first of those not yet done (see unfinishedDeliveries), for live subscribers, to be told
 * after the commit.
 */
export async function cancelDeliveriesToRemovedUrls(db: Db, webhookId: string): Promise<(DeliveryIdentity & { attempts: number })[]> {
  const toRemovedUrl = sql`${deliveries.url} not in (select u.url from webhook_gateway.webhook_urls u where u.webhook_id = ${webhookId})`;
  const notices = await unfinishedDeliveries(db, webhookId, toRemovedUrl);
  const cancel = (statuses: SQL) =>
    db
      .update(deliveries)
      .set({ status: 'CANCELLED', generation: sql`${deliveries.generation} + 1`, updatedAt: new Date() })
      .where(and(eq(deliveries.webhookId, webhookId), statuses, toRemovedUrl));
  // Apart, so that each is read through its partial index.
  if (notices.length > 0) await cancel(inArray(deliveries.status, UNFINISHED_STATUSES));
  await cancel(eq(deliveries.status, 'DEAD'));
  return notices;
}
