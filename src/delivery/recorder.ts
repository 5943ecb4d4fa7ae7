import { sql } from 'drizzle-orm';
import type { Db } from '../db/database';
import type { Logger } from '../logger';
import type { SendResult } from './sender';
import type { DeliveryStatus } from './tables';

export interface AttemptOutcome {
  deliveryId: number;
  generation: number;
  messageId: string;
  webhookId: string;
  eventId: string;
  url: string;
  attempt: number;
  attemptedAt: Date;
  result: SendResult;
  status: Extract<DeliveryStatus, 'SUCCEEDED' | 'RETRY_SCHEDULED' | 'DEAD'>;
  nextAttemptAt: Date | null;
}

interface Pending {
  outcome: AttemptOutcome;
  resolve(): void;
  reject(error: unknown): void;
}

const MAX_BATCH = 500;
const MAX_WAIT_MS = 5;

/**
 * Stores attempts and delivery states in batches: one transaction for every attempt finished
 * within a few milliseconds. Each caller waits until its own attempt is committed, so a job
 * finishes only once its record is safe.
 */
export class AttemptRecorder {
  private pending: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

  record(outcome: AttemptOutcome): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ outcome, resolve, reject });
      if (this.pending.length >= MAX_BATCH) this.flushSoon(0);
      else this.flushSoon(MAX_WAIT_MS);
    });
  }

  /** Writes whatever is waiting; resolves when it is committed. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending.splice(0);
    if (batch.length === 0) return this.flushing;
    // Batches commit one after another, so that a delivery's states land in order.
    this.flushing = this.flushing.then(() => this.write(batch));
    return this.flushing;
  }

  private flushSoon(ms: number): void {
    if (ms === 0 || !this.timer) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.flush(), ms);
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    try {
      await this.db.transaction(async (tx) => {
        await insertAttempts(tx, batch.map((entry) => entry.outcome));
        await updateDeliveries(tx, batch.map((entry) => entry.outcome));
        const finished = batch.filter((entry) => entry.outcome.status !== 'RETRY_SCHEDULED');
        if (finished.length > 0) await settleMessages(tx, [...new Set(finished.map((entry) => entry.outcome.messageId))]);
      });
      for (const entry of batch) entry.resolve();
    } catch (error) {
      this.log.error({ err: error, attempts: batch.length }, 'recording delivery attempts failed');
      for (const entry of batch) entry.reject(error);
    }
  }
}

// Rows whose message is gone (its webhook was deleted meanwhile) are skipped, not an error.
async function insertAttempts(db: Db, outcomes: AttemptOutcome[]): Promise<void> {
  const values = outcomes.map(
    (o) => sql`(${o.messageId}::uuid, ${o.webhookId}, ${o.eventId}, ${o.url}, ${o.attempt}::int,
      ${o.attemptedAt.toISOString()}::timestamptz, ${o.result.ok}, ${o.result.httpStatus ?? null}::int,
      ${o.result.durationMs}::int, ${o.result.error ?? null}, ${o.result.responseBody ?? null})`,
  );
  await db.execute(sql`insert into webhook_gateway.delivery_attempts
      (message_id, webhook_id, event_id, url, attempt, attempted_at, succeeded, http_status, duration_ms, error, response_body)
    select v.* from (values ${sql.join(values, sql`, `)})
      as v(message_id, webhook_id, event_id, url, attempt, attempted_at, succeeded, http_status, duration_ms, error, response_body)
    where exists (select 1 from webhook_gateway.messages m where m.id = v.message_id)`);
}

// The generation guard keeps a redelivery that happened meanwhile from being overwritten.
async function updateDeliveries(db: Db, outcomes: AttemptOutcome[]): Promise<void> {
  const values = outcomes.map(
    (o) => sql`(${o.deliveryId}::bigint, ${o.generation}::int, ${o.status}, ${o.attempt}::int,
      ${o.nextAttemptAt?.toISOString() ?? null}::timestamptz, ${o.result.httpStatus ?? null}::int, ${o.result.error ?? null})`,
  );
  await db.execute(sql`update webhook_gateway.deliveries d set
      status = v.status, attempts = greatest(d.attempts, v.attempt),
      next_attempt_at = coalesce(v.next_attempt_at, d.next_attempt_at),
      last_http_status = v.http_status, last_error = v.error, updated_at = now()
    from (values ${sql.join(values, sql`, `)}) as v(id, generation, status, attempt, next_attempt_at, http_status, error)
    where d.id = v.id and d.generation = v.generation`);
}

/** A message is settled once all its deliveries are: SUCCEEDED if all succeeded, else FAILED or CANCELLED. */
export async function settleMessages(db: Db, messageIds: string[]): Promise<void> {
  await db.execute(sql`update webhook_gateway.messages m set status = s.status
    from (
      select message_id,
        case when bool_and(status = 'SUCCEEDED') then 'SUCCEEDED'
             when bool_or(status = 'DEAD') then 'FAILED'
             else 'CANCELLED' end as status
      from webhook_gateway.deliveries
      where message_id in ${messageIds}
      group by message_id
      having bool_and(status in ('SUCCEEDED', 'DEAD', 'CANCELLED'))
    ) s
    where m.id = s.message_id and m.status <> s.status`);
}
