import { sql } from 'drizzle-orm';
import { queryRows, type Db } from '../db/database';
import { DEADLOCK_CODES, isConnectionError, postgresError, retryOnDeadlock } from '../db/errors';
import { countHourOf } from '../messages/stats';
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
  resolve(applied: boolean): void;
  reject(error: unknown): void;
}

const MAX_BATCH = 500;
const MAX_WAIT_MS = 5;
/**
 * While Postgres cannot be reached or cannot take a batch, it is written again this often, for as
 * long as it takes (until the worker stops): the calls are made, and failing their jobs would make
 * them again with no record of the first. What waits is bounded: a job waits for its record, so a
 * worker holds at most its concurrency of them.
 */
const RECONNECT_DELAY_MS = 1000;
/** A batch still waiting for Postgres is reported again this often. */
const RECONNECT_REPORT_MS = 60_000;
/**
 * SQLSTATEs of a refusal no row is to blame for, which passes: insufficient resources (class 53:
 * a full disk, out of memory), a statement or lock timeout, a deadlock or serialization conflict
 * lost again and again, an I/O error (class 58).
 */
const PASSING_REFUSAL = /^(53|58|57014$|55P03$|40P01$|40001$)/;
/** How often one attempt's record is written again after losing a deadlock before it is held. */
const MAX_DEADLOCK_RETRIES = 5;

/**
 * Stores attempts and delivery states in batches: one transaction for every attempt finished
 * within a few milliseconds. Each caller waits until its own attempt is committed, so a job
 * finishes only once its record is safe; it learns whether the delivery took the new state
 * (not if a redelivery or the webhook's deletion came in between).
 */
export class AttemptRecorder {
  private pending: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly writing = new Set<Promise<void>>();
  private givingUp = false;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

  record(outcome: AttemptOutcome): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.pending.push({ outcome, resolve, reject });
      if (this.pending.length >= MAX_BATCH) this.flushSoon(0);
      else this.flushSoon(MAX_WAIT_MS);
    });
  }

  /**
   * Writes whatever is waiting; resolves when it and every batch before it are committed.
   * Batches may commit in parallel (those adding to the same hourly count take turns on its
   * row): a delivery never has two outcomes in flight, since each caller waits for its record
   * before the delivery goes on.
   */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending.splice(0);
    if (batch.length > 0) {
      const writing = this.write(batch).finally(() => this.writing.delete(writing));
      this.writing.add(writing);
    }
    await Promise.all(this.writing);
  }

  /**
   * From now on a batch that cannot reach Postgres fails at once instead of waiting for it (the
   * worker is stopping: its jobs run again elsewhere, and call again).
   */
  giveUp(): void {
    this.givingUp = true;
  }

  private flushSoon(ms: number): void {
    if (ms === 0 || !this.timer) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.flush(), ms);
    }
  }

  /**
   * Writes the batch. What Postgres cannot take now (unreachable, or refusing for a reason no row
   * of the batch is to blame for: disk full, a timeout, a deadlock lost again and again) is held
   * and written again every second until it can: failing the jobs would make their calls again,
   * and again, with no record of them. `retried`: the batch is a refused row stored without its
   * text. `uncertain`: an earlier write of it was cut off and may have committed.
   */
  private async write(batch: Pending[], { retried = false, uncertain = false, reportedAt = 0 } = {}): Promise<void> {
    let moved: Set<number>;
    try {
      if (uncertain) batch = await this.withoutCommitted(batch);
      if (batch.length === 0) return;
      const record = () => recordOutcomes(this.db, batch.map((entry) => entry.outcome));
      // One row that lost a deadlock (or a serialization check) is simply written again. A larger
      // batch is split (recover).
      moved = await (batch.length === 1 ? retryOnDeadlock(record, 1 + MAX_DEADLOCK_RETRIES) : record());
    } catch (error) {
      const connectionLost = isConnectionError(error);
      const refused = postgresError(error);
      if (!connectionLost && !retried && (await this.recover(batch, refused))) return;
      const passing = refused !== undefined && PASSING_REFUSAL.test(refused.code);
      if ((connectionLost || passing) && !this.givingUp) {
        if (Date.now() - reportedAt >= RECONNECT_REPORT_MS) {
          const err = (error as Error).message;
          if (connectionLost) this.log.warn({ err, attempts: batch.length }, 'Postgres unreachable; holding the attempts until it is back');
          else this.log.error({ err, code: refused!.code, attempts: batch.length }, 'Postgres refused the attempts; holding them and writing them again every second');
          reportedAt = Date.now();
        }
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_DELAY_MS));
        return this.write(batch, { retried, uncertain: uncertain || connectionLost, reportedAt });
      }
      return this.fail(batch, error);
    }
    for (const entry of batch) entry.resolve(moved.has(entry.outcome.deliveryId));
  }

  /**
   * A write cut off with its connection may have committed before the answer was lost: the
   * attempts it stored are not stored again (nor counted twice). Each of those resolves to
   * whether its delivery has its state; the rest are returned, to be written.
   */
  private async withoutCommitted(batch: Pending[]): Promise<Pending[]> {
    const outcomes = batch.map((entry) => entry.outcome);
    const column = <T>(pick: (outcome: AttemptOutcome) => T) => sql.param(outcomes.map(pick));
    const stored = await queryRows<{ delivery_id: string | number; applied: boolean }>(
      this.db,
      sql`select o.delivery_id, exists (select 1 from webhook_gateway.deliveries d
            where d.id = o.delivery_id and d.generation = o.generation and d.attempts >= o.attempt) as applied
          from unnest(${column((o) => o.deliveryId)}::bigint[], ${column((o) => o.generation)}::int[], ${column((o) => o.messageId)}::uuid[],
            ${column((o) => o.url)}::text[], ${column((o) => o.attempt)}::int[], ${column((o) => o.attemptedAt.toISOString())}::text[]::timestamptz[])
            as o(delivery_id, generation, message_id, url, attempt, attempted_at)
          where exists (select 1 from webhook_gateway.delivery_attempts a
            where a.message_id = o.message_id and a.url = o.url and a.attempt = o.attempt and a.attempted_at = o.attempted_at)`,
    );
    const applied = new Map(stored.map((row) => [Number(row.delivery_id), row.applied]));
    return batch.filter((entry) => {
      const done = applied.get(entry.outcome.deliveryId);
      if (done !== undefined) entry.resolve(done);
      return done === undefined;
    });
  }

  private fail(batch: Pending[], error: unknown): void {
    this.log.error({ err: error, attempts: batch.length }, 'recording delivery attempts failed');
    for (const entry of batch) entry.reject(error);
  }

  /**
   * A batch Postgres turned down for one of its rows must not fail the others (their jobs would
   * fail and their calls be made again), so it is written again row by row: after a refused value
   * (class 22, e.g. text it cannot store), a deadlock (a single row that loses one is written
   * again, see write), or a foreign key violation (the message deleted with its webhook while the
   * batch was written). A row refused again is stored without its free text (error, answer), with
   * a note in its place, so that it is recorded and not sent again and again; a row whose message
   * is gone is dropped, as the statement itself would.
   * Resolves to whether the batch is taken care of.
   */
  private async recover(batch: Pending[], refused: (Error & { code: string }) | undefined): Promise<boolean> {
    if (!refused || !(refused.code.startsWith('22') || ['23503', ...DEADLOCK_CODES].includes(refused.code))) return false;
    if (batch.length > 1) {
      await Promise.all(batch.map((entry) => this.write([entry])));
      return true;
    }
    const [entry] = batch as [Pending];
    const { outcome } = entry;
    if (refused.code === '23503') {
      entry.resolve(false);
      return true;
    }
    if (!refused.code.startsWith('22')) return false;
    this.log.warn({ err: refused.message, deliveryId: outcome.deliveryId }, 'delivery attempt stored without its error and answer text');
    const note = `the attempt's error and answer text could not be stored (${refused.message})`;
    const bare = { ...outcome, result: { ...outcome.result, error: note, responseBody: undefined } };
    await this.write([{ ...entry, outcome: bare }], { retried: true });
    return true;
  }
}

/**
 * One statement, so one round trip and atomic: store the attempts (skipping those whose message
 * is gone with its webhook), add them to their webhooks' and events' counts, and move the
 * deliveries to their new state (unless a redelivery bumped their generation meanwhile, or the
 * outcome is for an attempt already recorded). Messages need no update: their status follows
 * from their deliveries'. Returns the deliveries moved.
 */
async function recordOutcomes(db: Db, outcomes: AttemptOutcome[]): Promise<Set<number>> {
  // One array per column: the statement's text is the same for any batch, so Postgres plans it once.
  const column = <T>(pick: (outcome: AttemptOutcome) => T) => sql.param(outcomes.map(pick));
  const rows = await queryRows<{ id: string | number }>(
    db,
    sql`
    with outcome as (
      select * from unnest(${column((o) => o.deliveryId)}::bigint[], ${column((o) => o.generation)}::int[],
        ${column((o) => o.messageId)}::uuid[], ${column((o) => o.webhookId)}::text[], ${column((o) => o.eventId)}::text[],
        ${column((o) => o.url)}::text[], ${column((o) => o.attempt)}::int[],
        ${column((o) => o.attemptedAt.toISOString())}::text[]::timestamptz[], ${column((o) => String(o.result.ok))}::text[]::boolean[],
        ${column((o) => o.result.httpStatus ?? null)}::int[], ${column((o) => o.result.durationMs)}::int[],
        ${column((o) => o.result.error ?? null)}::text[], ${column((o) => o.result.responseBody ?? null)}::text[],
        ${column((o) => o.status)}::text[], ${column((o) => o.nextAttemptAt?.toISOString() ?? null)}::text[]::timestamptz[])
        as o(delivery_id, generation, message_id, webhook_id, event_id, url, attempt, attempted_at, succeeded,
             http_status, duration_ms, error, response_body, status, next_attempt_at)
    ),
    logged as (
      insert into webhook_gateway.delivery_attempts
        (message_id, webhook_id, event_id, url, attempt, attempted_at, succeeded, http_status, duration_ms, error, response_body)
      select message_id, webhook_id, event_id, url, attempt, attempted_at, succeeded, http_status, duration_ms, error, response_body
      from outcome o
      where o.message_id in (select id from webhook_gateway.messages where id = any(array(select message_id from outcome)))
      returning webhook_id, event_id, attempted_at, succeeded
    ),
    counted as (
      insert into webhook_gateway.delivery_counts as c (webhook_id, event_id, hour, calls, errors)
      select webhook_id, event_id, ${countHourOf(sql`attempted_at`)}, count(*), count(*) filter (where not succeeded)
      from logged group by 1, 2, 3 order by 1, 2, 3
      on conflict (webhook_id, event_id, hour) do update set calls = c.calls + excluded.calls, errors = c.errors + excluded.errors
    )
    update webhook_gateway.deliveries d set
      status = o.status, attempts = o.attempt,
      next_attempt_at = coalesce(o.next_attempt_at, d.next_attempt_at),
      last_http_status = o.http_status, last_error = o.error, updated_at = now()
    from outcome o
    where d.id = any(array(select delivery_id from outcome))
      and d.id = o.delivery_id and d.generation = o.generation and d.attempts < o.attempt
    returning d.id`,
    // Deliveries and messages by their ids as arrays, whatever the plan (see queryRows).
    { prepared: true },
  );
  return new Set(rows.map((row) => Number(row.id)));
}
