import { Queue } from 'bullmq';
import { and, asc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { queryRows, type Db } from '../db/database';
import { messages } from '../messages/tables';
import { webhooks } from '../webhooks/tables';
import { statusEvent, type DeliveryIdentity, type StatusPublisher } from './status';
import { deliveries, UNFINISHED_STATUSES } from './tables';
import { SLOT_SLACK_MS, type Throttle } from './throttle';

export const DELIVERY_QUEUE = 'deliveries';
const HANDOVER_BATCH = 1000;

/** A delivery job carries ids only; the worker loads the rest from Postgres. */
export const deliveryJobData = z.object({
  deliveryId: z.number().int().positive(),
  generation: z.number().int().min(0),
  /** Set once the job holds a throttle slot, so that waking up for it does not book another. */
  slot: z
    .object({ at: z.number(), ticket: z.number().int(), limit: z.number(), epoch: z.number().int().min(0).default(0), queued: z.boolean() })
    .optional(),
});
export type DeliveryJobData = z.infer<typeof deliveryJobData>;

/** Idempotent: one job per delivery and generation, however often it is handed over. */
export const deliveryJobId = (deliveryId: number, generation: number) => `d${deliveryId}-g${generation}`;

/** The producer side of the delivery queue, with the connection it owns. */
export function createDeliveryQueue(redisUrl: string, prefix: string): { queue: Queue<DeliveryJobData>; close(): Promise<void> } {
  // Fails fast while Redis is away: the deliveries wait in Postgres and are handed over later.
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  connection.on('error', () => {}); // reported by the gateway's own Redis connection
  const queue = new Queue<DeliveryJobData>(DELIVERY_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: {
      removeOnComplete: true,
      removeOnFail: { count: 1000 },
      // Receivers' failures are retried on RETRY_SCHEDULE by the worker itself. These attempts are
      // for the gateway's own: a job that could not load or record (Postgres away) runs again.
      attempts: 100_000,
      backoff: { type: 'fixed', delay: 2000 },
    },
  });
  queue.on('error', () => {}); // failures surface where the queue is used (the handover)
  return {
    queue,
    async close() {
      await queue.close();
      connection.disconnect(); // a connection passed in is not BullMQ's to close
    },
  };
}

export interface Handover {
  queue: Queue<DeliveryJobData>;
  throttle: Throttle;
  callThrottlingMax: number;
  status: StatusPublisher;
}

export interface DeliveryToQueue extends DeliveryIdentity {
  id: number;
  generation: number;
  attempts: number;
  callThrottling: number;
  throttleEpoch: number;
  nextAttemptAt: Date;
}

/**
 * Adds the deliveries' jobs. Due ones book their webhook's throttle slots here, in the order
 * given (creation order), and wait in the delayed set until their slot: so they go out in
 * order, and waiting costs no worker. A retry due later books its slot when it wakes.
 */
export async function addDeliveryJobs(handover: Handover, rows: readonly DeliveryToQueue[]): Promise<void> {
  if (rows.length === 0) return;
  const now = Date.now();
  const isDue = (row: DeliveryToQueue) => row.nextAttemptAt.getTime() <= now;
  const due = rows.filter(isDue);
  const [, slots] = await Promise.all([
    // Before the jobs exist, so that no subscriber sees a delivery start before it was queued.
    handover.status.publishNow(
      rows.map((row) =>
        isDue(row)
          ? statusEvent(row, 'QUEUED', row.attempts + 1)
          : statusEvent(row, 'RETRY_SCHEDULED', row.attempts, { nextAttemptAt: row.nextAttemptAt }), // queued again, not due yet
      ),
    ),
    handover.throttle.reserveSlots(
      due.map((row) => ({
        webhookId: row.webhookId,
        url: row.url,
        limit: Math.min(row.callThrottling, handover.callThrottlingMax),
        epoch: row.throttleEpoch,
      })),
    ),
  ]);
  const slotOf = new Map(due.map((row, index) => [row.id, slots[index]!]));
  // Delays count from the jobs' creation, now: the publish and the booking took a while (a batch's
  // events and commands are built first), and counting from before would delay jobs needlessly.
  const addedAt = Date.now();
  await handover.queue.addBulk(
    rows.map((row) => {
      const slot = slotOf.get(row.id);
      const wait = slot && slot.at - addedAt;
      return {
        name: 'deliver',
        data: { deliveryId: row.id, generation: row.generation, slot },
        opts: {
          jobId: deliveryJobId(row.id, row.generation),
          // A slot this close is waited for at send time; the delayed set costs more than that.
          delay: wait === undefined ? Math.max(0, row.nextAttemptAt.getTime() - addedAt) : wait > SLOT_SLACK_MS ? wait : 0,
        },
      };
    }),
  );
}

/** What a handover needs of the deliveries that match, in creation order. */
function selectForHandover(db: Db, where: SQL | undefined, limit: number): Promise<DeliveryToQueue[]> {
  return db
    .select({
      id: deliveries.id,
      generation: deliveries.generation,
      attempts: deliveries.attempts,
      nextAttemptAt: deliveries.nextAttemptAt,
      messageId: deliveries.messageId,
      webhookId: deliveries.webhookId,
      eventId: messages.eventId,
      url: deliveries.url,
      callThrottling: webhooks.callThrottling,
      throttleEpoch: webhooks.throttleEpoch,
    })
    .from(deliveries)
    .innerJoin(webhooks, eq(webhooks.id, deliveries.webhookId))
    .innerJoin(messages, eq(messages.id, deliveries.messageId))
    .where(where)
    .orderBy(asc(deliveries.id))
    .limit(limit);
}

/** The first key of the gateway's two-key advisory locks, so as not to meet the application's own locks in its database. */
export const LOCK_SPACE = 0x77677779;

/** The advisory lock that lets one dispatcher at a time hand unqueued deliveries over. */
const SWEEP_LOCK = { space: LOCK_SPACE, key: 1 };

/**
 * Waits for a sweep in progress and keeps others off until the transaction ends. Taken by a
 * change that unqueues a webhook's waiting deliveries (rebookWaitingDeliveries), before its lock
 * on the webhook's row: a sweep claiming from a snapshot taken before that change committed
 * would book the later ones it saw ahead of the earlier ones the change unqueued.
 */
export async function holdSweeps(db: Db): Promise<void> {
  await db.execute(sql`select pg_advisory_xact_lock(${SWEEP_LOCK.space}::int, ${SWEEP_LOCK.key}::int)`);
}

/**
 * The safety net under the dispatcher's own handover: queues deliveries marked unqueued (Redis
 * was away, a redelivery, a changed limit, a lost queue), up to `limit`, each webhook's oldest
 * first and the webhooks in turns. One dispatcher at a time (they all wake on the same NOTIFY;
 * the others are told 'busy'), and in one transaction that claims them (marks them queued),
 * books their throttle slots and adds their jobs: so each webhook's slots are booked in id
 * order, a failure leaves them unqueued, and a redelivery or a change of the limit that touches
 * them meanwhile waits, then marks them unqueued again.
 * Returns how many it handed over, or 'busy' while another dispatcher sweeps.
 */
export async function queueDeliveries(db: Db, handover: Handover, limit = HANDOVER_BATCH): Promise<number | 'busy'> {
  const rows = await db.transaction(async (tx) => {
    // The claim's row locks are held while it talks to Redis: one that stops answering must not
    // hold them long. JIT compiling the claim (costed high: the planner cannot know the shares)
    // would cost more than running it.
    const [lock] = await queryRows<{ taken: boolean }>(
      tx,
      sql`select pg_try_advisory_xact_lock(${SWEEP_LOCK.space}::int, ${SWEEP_LOCK.key}::int) as taken,
        set_config('idle_in_transaction_session_timeout', '10s', true), set_config('jit', 'off', true)`,
    );
    if (!lock?.taken) return 'busy';
    // The webhooks with deliveries waiting (one index probe each), then an equal share of each
    // one's oldest, taken in turns: a webhook's long backlog (a changed limit rebooks it whole)
    // does not hold back another's few. A share is read from the index on (webhook_id, id) from the
    // webhook's first entry on (what spills into the next webhook is dropped): asked for by
    // `webhook_id =`, the planner may walk an index in id order instead, through every other
    // webhook's backlog. The predicate is the partial index's (UNFINISHED_STATUSES).
    const claimed = await queryRows<{ id: string | number }>(
      tx,
      sql`with recursive waiting(webhook_id) as (
          (select webhook_id from webhook_gateway.deliveries
            where not queued and status in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED') order by webhook_id limit 1)
          union all
          select (select d.webhook_id from webhook_gateway.deliveries d
            where not d.queued and d.status in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED') and d.webhook_id > w.webhook_id
            order by d.webhook_id limit 1)
          from waiting w where w.webhook_id is not null),
        share as (
          select greatest(1, ceil(${limit}::numeric / nullif(count(*), 0)))::int as per_webhook from waiting where webhook_id is not null),
        picked as (
          select oldest.id from waiting w cross join share cross join lateral (
            select d.id, d.webhook_id, row_number() over (order by d.webhook_id, d.id) as turn from webhook_gateway.deliveries d
            where d.webhook_id >= w.webhook_id and not d.queued and d.status in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED')
            order by d.webhook_id, d.id limit share.per_webhook) oldest
          where oldest.webhook_id = w.webhook_id
          order by oldest.turn, oldest.id limit ${limit})
        update webhook_gateway.deliveries d set queued = true from picked
        where d.id = picked.id and not d.queued and d.status in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED')
        returning d.id`,
    );
    if (claimed.length === 0) return [];
    const rows = await selectForHandover(
      tx,
      inArray(
        deliveries.id,
        claimed.map((row) => Number(row.id)),
      ),
      limit,
    );
    await addDeliveryJobs(handover, rows);
    return rows;
  });
  if (rows === 'busy') return rows;
  await removeSupersededJobs(handover, rows);
  return rows.length;
}

/**
 * A delivery queued again under a new generation after a change of its webhook's limit leaves
 * the job of the one before waiting for a slot of the old epoch (hours away, maybe): it would
 * only wake to find itself superseded, so it goes now. A job still in line in the current epoch
 * (a redelivery) is left to wake and give its place in line up; a running one cannot be removed
 * and ends by itself.
 */
async function removeSupersededJobs(handover: Handover, rows: readonly DeliveryToQueue[]): Promise<void> {
  await Promise.allSettled(
    rows
      .filter((row) => row.generation > 0)
      .map(async (row) => {
        const job = await handover.queue.getJob(deliveryJobId(row.id, row.generation - 1));
        const slot = job && deliveryJobData.safeParse(job.data).data?.slot;
        if (job && !(slot && slot.epoch === row.throttleEpoch)) await job.remove();
      }),
  );
}

/**
 * Redis may lose its data (a restart without persistence). A marker key tells: when it is gone,
 * every unfinished delivery is marked unqueued, and the handover queues it again (job ids are
 * idempotent, so jobs that did survive are not doubled). Returns how many it marked: none while
 * the marker is there, nor when nothing was unfinished (a new installation, whose Redis never had
 * the marker).
 */
export async function requeueIfQueueLost(db: Db, redis: Redis, prefix: string): Promise<number> {
  const marker = `${prefix}:${DELIVERY_QUEUE}:gateway-epoch`;
  if ((await redis.exists(marker)) === 1) return 0;
  const [marked] = await queryRows<{ count: number }>(
    db,
    sql`with marked as (
        update ${deliveries} set queued = false
        where ${and(eq(deliveries.queued, true), inArray(deliveries.status, UNFINISHED_STATUSES))} returning 1)
      select count(*)::int as count from marked`,
  );
  await redis.set(marker, new Date().toISOString());
  return marked!.count;
}

/**
 * A dispatcher that stopped between committing deliveries and queueing them leaves them marked
 * queued without a job, and a Redis restored from an older snapshot can lose jobs, retries'
 * too. Deliveries queued long ago and not sent, and retries long overdue, get their job added
 * again: job ids are idempotent, so one that exists (a throttled backlog) is left as it is.
 * Each check goes through up to `pages` pages of them from the id `after` and returns where the
 * next one goes on (0: from the start), so that a long throttled backlog cannot keep a lost job
 * behind it for good.
 */
export async function requeueStale(
  db: Db,
  handover: Handover,
  olderThanMs: number,
  after = 0,
  { pageSize = HANDOVER_BATCH, pages = 10 }: { pageSize?: number; pages?: number } = {},
): Promise<number> {
  const stale = sql`now() - make_interval(secs => ${olderThanMs / 1000})`;
  for (let page = 0; page < pages; page++) {
    const rows = await selectForHandover(
      db,
      and(
        eq(deliveries.queued, true),
        inArray(deliveries.status, UNFINISHED_STATUSES), // the partial index's predicate
        sql`${deliveries.id} > ${after}`,
        sql`((${deliveries.status} = 'QUEUED' and ${deliveries.updatedAt} < ${stale})
          or (${deliveries.status} = 'RETRY_SCHEDULED' and ${deliveries.nextAttemptAt} < ${stale}))`,
      ),
      pageSize,
    );
    // Booking slots again would waste them: these wait for a slot when they run.
    await handover.queue.addBulk(
      rows.map((row) => ({
        name: 'deliver',
        data: { deliveryId: row.id, generation: row.generation },
        opts: { jobId: deliveryJobId(row.id, row.generation) },
      })),
    );
    if (rows.length < pageSize) return 0;
    after = rows.at(-1)!.id;
  }
  return after;
}

/** Deliveries whose jobs could not be added: the handover's safety net picks them up. */
export async function markUnqueued(db: Db, rows: readonly DeliveryToQueue[]): Promise<void> {
  if (rows.length === 0) return;
  await db
    .update(deliveries)
    .set({ queued: false })
    .where(
      inArray(
        deliveries.id,
        rows.map((row) => row.id),
      ),
    );
}
