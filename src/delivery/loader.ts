import { sql } from 'drizzle-orm';
import { queryRows, type Db } from '../db/database';
import { secretKey } from './signature';
import type { DeliveryStatus } from './tables';

/** Everything one delivery attempt needs, read in one query. */
export interface DeliveryWork {
  deliveryId: number;
  generation: number;
  status: DeliveryStatus;
  attempts: number;
  /** When a scheduled retry is due. */
  nextAttemptAt: Date;
  url: string;
  messageId: string;
  messageCreatedAt: Date;
  eventId: string;
  /** The message's body; null if it is larger than INLINE_BODY_BYTES (read by `loadBody` when its call is due). */
  body: string | null;
  /** The body's size in bytes (UTF-8). */
  bodyBytes: number;
  webhookId: string;
  callThrottling: number;
  throttleEpoch: number;
  /** The current secret's key, and those of the secrets it replaced while they still sign. */
  signingKeys: Buffer[];
}

interface WorkRow {
  delivery_id: string | number;
  generation: number;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: string | Date;
  url: string;
  message_id: string;
  message_created_at: string | Date;
  event_id: string;
  body: string | null;
  body_bytes: number;
  webhook_id: string;
  call_throttling: number;
  throttle_epoch: number;
  secret: string;
  /** The replaced secrets still signing, newest first. */
  signing_previous: string[];
}

interface Waiter {
  resolve(work: DeliveryWork | undefined): void;
  reject(error: unknown): void;
}

/** Bodies larger than this are not sent (nor loaded). */
export const MAX_BODY_BYTES = 10 * 1024 * 1024;
/**
 * Bodies up to this size come with their delivery's load: a batch of 200 holds 13 MB at most. A
 * larger one is read alone once its call is due, within the worker's budget for large bodies.
 */
export const INLINE_BODY_BYTES = 64 * 1024;
const MAX_BATCH = 200;
// Jobs arrive one by one from the queue; waiting this long gathers them into one query.
const BATCH_WINDOW_MS = 2;
const KEY_CACHE_LIMIT = 10_000;

/**
 * Loads deliveries for the worker, batching the loads requested within a couple of
 * milliseconds into one query: concurrent jobs cost one round trip, not one each.
 */
export class DeliveryLoader {
  private waiting = new Map<number, Waiter[]>();
  private scheduled = false;
  private keys = new Map<string, Buffer>();

  constructor(private readonly db: Db) {}

  load(deliveryId: number): Promise<DeliveryWork | undefined> {
    return new Promise((resolve, reject) => {
      const waiters = this.waiting.get(deliveryId) ?? [];
      waiters.push({ resolve, reject });
      this.waiting.set(deliveryId, waiters);
      if (this.waiting.size >= MAX_BATCH) this.run();
      else if (!this.scheduled) {
        this.scheduled = true;
        setTimeout(() => this.run(), BATCH_WINDOW_MS);
      }
    });
  }

  private run(): void {
    this.scheduled = false;
    const batch = this.waiting;
    if (batch.size === 0) return;
    this.waiting = new Map();
    this.fetch([...batch.keys()]).then(
      (found) => {
        for (const [id, waiters] of batch) for (const waiter of waiters) waiter.resolve(found.get(id));
      },
      (error: unknown) => {
        for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(error);
      },
    );
  }

  /** A message's body, read alone (one too large to come with its delivery); undefined if the message is gone. */
  async loadBody(messageId: string): Promise<string | undefined> {
    const [row] = await queryRows<{ body: string }>(this.db, sql`select body from webhook_gateway.messages where id = ${messageId}`, {
      prepared: true,
    });
    return row?.body;
  }

  private keyOf(secret: string): Buffer {
    let key = this.keys.get(secret);
    if (!key) {
      if (this.keys.size >= KEY_CACHE_LIMIT) this.keys.clear();
      key = secretKey(secret);
      this.keys.set(secret, key);
    }
    return key;
  }

  private async fetch(ids: number[]): Promise<Map<number, DeliveryWork>> {
    // Prepared, and planned once per connection: planning this join took four times as long as
    // running it for a batch of 40. The ids are read through a sub-select so that the planner
    // cannot see how many there are: a plan for a few ids would look cheaper than the generic
    // one, and Postgres would keep planning afresh for every small batch. The message and the
    // webhook are looked up per delivery, whatever the plan (see queryRows).
    const rows = await queryRows<WorkRow>(
      this.db,
      sql`select d.id as delivery_id, d.generation, d.status, d.attempts, d.next_attempt_at, d.url, d.message_id,
            m.created_at as message_created_at, m.event_id, m.body, m.body_bytes, w.id as webhook_id, w.call_throttling, w.throttle_epoch, w.secret,
            -- the replaced secrets still signing (a webhook never rotated skips the subquery)
            case when w.previous_secrets = '[]' then '{}' else array(
              select p ->> 'secret' from jsonb_array_elements(w.previous_secrets) with ordinality as e(p, n)
              where (p ->> 'expiresAt')::timestamptz > now() order by n) end as signing_previous
          from webhook_gateway.deliveries d
          -- octet_length reads a stored value's size from its header: a large body is not read to be measured
          cross join lateral (select created_at, event_id, octet_length(body) as body_bytes,
              case when octet_length(body) <= ${sql.raw(String(INLINE_BODY_BYTES))} then body end as body
            from webhook_gateway.messages m where m.id = d.message_id offset 0) m
          cross join lateral (select id, call_throttling, throttle_epoch, secret, previous_secrets
            from webhook_gateway.webhooks w where w.id = d.webhook_id offset 0) w
          where d.id = any(array(select unnest(${sql.param(ids)}::bigint[])))`,
      { prepared: true },
    );
    return new Map(
      rows.map((row) => [
        Number(row.delivery_id),
        {
          deliveryId: Number(row.delivery_id),
          generation: row.generation,
          status: row.status,
          attempts: row.attempts,
          nextAttemptAt: new Date(row.next_attempt_at),
          url: row.url,
          messageId: row.message_id,
          messageCreatedAt: new Date(row.message_created_at),
          eventId: row.event_id,
          body: row.body,
          bodyBytes: row.body_bytes,
          webhookId: row.webhook_id,
          callThrottling: row.call_throttling,
          throttleEpoch: row.throttle_epoch,
          signingKeys: [this.keyOf(row.secret), ...row.signing_previous.map((secret) => this.keyOf(secret))],
        },
      ]),
    );
  }
}
