import type { Redis } from 'ioredis';
import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import { alias } from 'drizzle-orm/pg-core';
import type { Config } from '../config';
import { formatEventDate } from '../dates';
import { queryRows, type Database, type Db } from '../db/database';
import { newTimeOrderedUuid } from '../db/ids';
import { deleteExpiredRecords } from '../delivery/retention';
import { webhookEvents, type EventType } from '../events/tables';
import type { Logger } from '../logger';
import { countHourOf } from '../messages/stats';
import { defaultBody, parsePayloadTemplate, pickFields, renderTemplate, RENDERABLE_TEMPLATE_DEPTH, type HookValues } from '../messages/payload';
import { urlsByWebhook } from '../webhooks/service';
import { webhooks } from '../webhooks/tables';
import {
  addDeliveryJobs,
  LOCK_SPACE,
  markUnqueued,
  queueDeliveries,
  requeueIfQueueLost,
  requeueStale,
  type DeliveryToQueue,
  type Handover,
} from '../delivery/queue';
import { dispatcherState } from './tables';
import { OUTBOX_CHANNEL, syncCaptureTriggers } from './triggers';

const EVENT_TYPE_OF: Record<string, EventType> = {
  INSERT: 'table.recordInsert',
  UPDATE: 'table.recordUpdate',
  DELETE: 'table.recordDelete',
};

export const DISPATCH_BATCH_SIZE = 1000;
/**
 * A batch also stops at this much row data (its first change always goes): a batch is held in
 * memory whole, and its bodies travel as one string, which V8 caps at about 512 MB.
 */
export const DISPATCH_BATCH_BYTES = 32 * 1024 * 1024;
const QUEUE_CHECK_INTERVAL_MS = 5000;
/** Unqueued deliveries a dispatcher hands over, at least, between two batches of changes. */
const SWEEP_PER_TURN = 5000;
const CLEANUP_INTERVAL_MS = 3_600_000;
const UNRENDERABLE_REPORT_INTERVAL_MS = 60_000;
const IDLE_FLAG_REFRESH_MS = 1000;
/** Deliveries queued this long ago and not sent, or retries this long overdue, are checked for a missing job. */
const STALE_AFTER_MS = 120_000;

type Row = Record<string, unknown>;

interface MatchingEvent {
  id: string;
  webhookId: string;
  callThrottling: number;
  throttleEpoch: number;
  eventType: EventType;
  objectName: string;
  objectFields: string[];
  customPayloadFields: string[];
  template: unknown;
  secret: string;
  /** DefaultPayloadIncludesSecret: the default body carries the secret (templates always may). */
  secretInDefaultBody: boolean;
}

/**
 * The webhooks' rows are share-locked until the batch commits: a change of CallThrottling (which
 * locks its webhook's row for update, see updateWebhook) either commits before this read, and the
 * batch's deliveries are booked under the new limit and epoch, or waits for the batch's commit and
 * then books the batch's deliveries afresh itself.
 */
async function activeEventsFor(db: Db, tables: string[], unrenderable: UnrenderableEvent[]): Promise<Map<string, MatchingEvent[]>> {
  const webhook = alias(webhooks, 'webhook'); // FOR … OF takes an unqualified name
  const rows = await db
    .select({
      event: webhookEvents,
      secret: webhook.secret,
      includeSecret: webhook.defaultPayloadIncludesSecret,
      callThrottling: webhook.callThrottling,
      throttleEpoch: webhook.throttleEpoch,
    })
    .from(webhookEvents)
    .innerJoin(webhook, eq(webhook.id, webhookEvents.webhookId))
    .where(and(inArray(webhookEvents.objectName, tables), eq(webhookEvents.enabled, true), eq(webhook.enabled, true)))
    .orderBy(asc(webhookEvents.createdAt))
    .for('key share', { of: webhook });
  const byTableAndType = new Map<string, MatchingEvent[]>();
  for (const { event, secret, includeSecret, callThrottling, throttleEpoch } of rows) {
    let template: unknown;
    try {
      // Validated at save time; parsed once per batch here.
      const parsed = event.customPayloadTemplate && parsePayloadTemplate(event.customPayloadTemplate, { maxDepth: RENDERABLE_TEMPLATE_DEPTH });
      template = parsed ? parsed.structure : undefined;
    } catch (error) {
      // Saved before a check it fails (one too deep to render): the event makes no messages, and
      // the batch, with every other webhook's messages, goes on.
      unrenderable.push({ eventId: event.id, webhookId: event.webhookId, problem: `CustomPayloadTemplate ${(error as Error).message}` });
      continue;
    }
    const key = `${event.objectName}\u0000${event.eventType}`;
    const list = byTableAndType.get(key) ?? [];
    list.push({
      id: event.id,
      webhookId: event.webhookId,
      callThrottling,
      throttleEpoch,
      eventType: event.eventType,
      objectName: event.objectName,
      objectFields: event.objectFields,
      customPayloadFields: event.customPayloadFields,
      template,
      secret,
      secretInDefaultBody: includeSecret,
    });
    byTableAndType.set(key, list);
  }
  return byTableAndType;
}

/** The webhooks with an enabled event on one of the tables, as a sub-select. */
const webhooksWatching = (db: Db, tables: string[]) =>
  db
    .select({ webhookId: webhookEvents.webhookId })
    .from(webhookEvents)
    .where(and(inArray(webhookEvents.objectName, tables), eq(webhookEvents.enabled, true)));

/** bytea columns per table: to_json renders them as `\x…` hex, receivers get base64. */
async function byteaColumnsOf(db: Db, schema: string, tables: string[]): Promise<Map<string, string[]>> {
  const rows = await queryRows<{ table_name: string; column_name: string }>(
    db,
    sql`select c.relname as table_name, a.attname as column_name
        from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = ${schema} and c.relname in ${tables} and a.atttypid = 'bytea'::regtype
          and a.attnum > 0 and not a.attisdropped`,
  );
  const byTable = new Map<string, string[]>();
  for (const row of rows) byTable.set(row.table_name, [...(byTable.get(row.table_name) ?? []), row.column_name]);
  return byTable;
}

function withBase64Bytea(row: Row, byteaColumns: string[] | undefined): Row {
  if (!byteaColumns) return row;
  const converted = { ...row };
  for (const column of byteaColumns) {
    const value = converted[column];
    if (typeof value === 'string' && value.startsWith('\\x')) {
      converted[column] = Buffer.from(value.slice(2), 'hex').toString('base64');
    }
  }
  return converted;
}

/** An update fires an event with ObjectFields only when one of those columns changed. */
function changesWatchedColumn(event: MatchingEvent, before: Row, after: Row): boolean {
  if (event.objectFields.length === 0) return true;
  return event.objectFields.some((column) => JSON.stringify(before[column]) !== JSON.stringify(after[column]));
}

interface NewMessage {
  id: string;
  webhookId: string;
  eventId: string;
  eventType: string;
  objectName: string;
  body: string;
  eventDate: Date;
}

interface NewDelivery {
  messageId: string;
  webhookId: string;
  eventId: string;
  url: string;
  callThrottling: number;
  throttleEpoch: number;
}

// Bulk writes take one array per column (unnest): a handful of parameters however many rows,
// where a VALUES list would build and bind thousands, and a statement text that never changes, so
// it is prepared once per connection. (Timestamps travel as text[]: postgres.js cannot serialise
// a timestamptz[] parameter.)
/**
 * A change matching several events makes several bodies: they go in parts of about maxBytes.
 * The parts are issued at once, so they stay ahead of the deliveries on the connection.
 */
async function insertMessages(db: Db, rows: NewMessage[], maxBytes: number): Promise<void> {
  const parts: NewMessage[][] = [];
  let bytes = maxBytes;
  for (const row of rows) {
    if (bytes >= maxBytes) {
      parts.push([]);
      bytes = 0;
    }
    parts.at(-1)!.push(row);
    bytes += row.body.length;
  }
  await Promise.all(parts.map((part) => insertMessagePart(db, part)));
}

async function insertMessagePart(db: Db, rows: NewMessage[]): Promise<void> {
  const column = <T>(pick: (row: NewMessage) => T) => sql.param(rows.map(pick));
  // The bodies go as one text, a line each: JSON.stringify never writes a raw line break, and
  // this spares escaping every quote of every body into an array literal (a third of the cost).
  const bodies = sql.param(rows.map((row) => row.body).join('\n'));
  await queryRows(
    db,
    sql`insert into webhook_gateway.messages (id, webhook_id, event_id, event_type, object_name, body, event_date)
    select * from unnest(${column((row) => row.id)}::uuid[], ${column((row) => row.webhookId)}::text[],
      ${column((row) => row.eventId)}::text[], ${column((row) => row.eventType)}::text[],
      ${column((row) => row.objectName)}::text[], string_to_array(${bodies}::text, E'\n'),
      ${column((row) => row.eventDate.toISOString())}::text[]::timestamptz[])`,
    { prepared: true },
  );
}

/**
 * Marked queued at once: the dispatcher queues them right after the commit, and marks back the
 * few it could not (Redis away), which saves an update of every delivery. But a webhook that has
 * deliveries waiting unqueued (Redis away, a change of its limit being booked) gets its new ones
 * unqueued too, so that the sweep books them after those, in order. Returns the deliveries
 * marked queued, for the handover, and how many were not.
 */
async function insertDeliveries(db: Db, rows: NewDelivery[]): Promise<{ queued: DeliveryToQueue[]; unqueued: number }> {
  if (rows.length === 0) return { queued: [], unqueued: 0 };
  const inserted = await queryRows<{ id: string | number; message_id: string; url: string; next_attempt_at: string | Date; queued: boolean }>(
    db,
    sql`with waiting as (
        select w.id as webhook_id from unnest(${sql.param([...new Set(rows.map((row) => row.webhookId))])}::text[]) as w(id)
        where exists (select 1 from webhook_gateway.deliveries u
          where u.webhook_id = w.id and not u.queued and u.status in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED')))
      insert into webhook_gateway.deliveries (message_id, webhook_id, url, queued)
      select message_id, webhook_id, url, webhook_id not in (select webhook_id from waiting)
      from unnest(${sql.param(rows.map((row) => row.messageId))}::uuid[], ${sql.param(rows.map((row) => row.webhookId))}::text[],
        ${sql.param(rows.map((row) => row.url))}::text[]) as d(message_id, webhook_id, url)
      returning id, message_id, url, next_attempt_at, queued`,
    { prepared: true },
  );
  const idOf = new Map(inserted.map((row) => [`${row.message_id} ${row.url}`, row]));
  const queued: DeliveryToQueue[] = [];
  for (const row of rows) {
    const made = idOf.get(`${row.messageId} ${row.url}`)!;
    if (!made.queued) continue;
    queued.push({
      id: Number(made.id),
      generation: 0,
      attempts: 0,
      messageId: row.messageId,
      webhookId: row.webhookId,
      eventId: row.eventId,
      url: row.url,
      callThrottling: row.callThrottling,
      throttleEpoch: row.throttleEpoch,
      nextAttemptAt: new Date(made.next_attempt_at),
    });
  }
  return { queued, unqueued: rows.length - queued.length };
}

/** Adds the batch's messages to their webhooks' and events' counts for this hour. */
async function countMessages(db: Db, rows: NewMessage[]): Promise<void> {
  if (rows.length === 0) return;
  const counts = new Map<string, { webhookId: string; eventId: string; messages: number }>();
  for (const { webhookId, eventId } of rows) {
    const key = `${webhookId}\u0000${eventId}`;
    const count = counts.get(key);
    if (count) count.messages++;
    else counts.set(key, { webhookId, eventId, messages: 1 });
  }
  const groups = [...counts.values()];
  // In key order, as the attempts' counts are: concurrent writers lock the rows in the same order.
  await queryRows(
    db,
    sql`insert into webhook_gateway.delivery_counts as c (webhook_id, event_id, hour, messages)
      select webhook_id, event_id, ${countHourOf(sql`now()`)}, messages
      from unnest(${sql.param(groups.map((group) => group.webhookId))}::text[], ${sql.param(groups.map((group) => group.eventId))}::text[],
        ${sql.param(groups.map((group) => group.messages))}::int[]) as g(webhook_id, event_id, messages)
      order by webhook_id, event_id
      on conflict (webhook_id, event_id, hour) do update set messages = c.messages + excluded.messages`,
    { prepared: true },
  );
}

async function deleteChanges(db: Db, changes: { id: number }[]): Promise<void> {
  const ids = sql.param(changes.map((change) => change.id));
  await queryRows(db, sql`delete from webhook_gateway.outbox where id = any(${ids}::bigint[])`, { prepared: true });
}

/** An active event whose stored template cannot be rendered; its changes make no messages. */
export interface UnrenderableEvent {
  eventId: string;
  webhookId: string;
  problem: string;
}

export interface DispatchResult {
  changes: number;
  messages: number;
  unrenderable: UnrenderableEvent[];
  /** The deliveries made, in creation order, to hand to the queue once committed. */
  deliveries: DeliveryToQueue[];
  /** How many were made unqueued, for the sweep (their webhooks have deliveries waiting unqueued). */
  unqueued: number;
}

interface Change {
  id: number;
  operation: 'INSERT' | 'UPDATE' | 'DELETE';
  tableName: string;
  oldRow: Row | null;
  newRow: Row | null;
  changedAt: Date;
}

/**
 * The oldest changes no other dispatcher holds: up to `limit` of them, and up to `maxBytes` of
 * row data (measured without reading the rows; the first change goes whatever its size).
 */
async function takeChanges(db: Db, limit: number, maxBytes: number): Promise<Change[]> {
  type OutboxRow = { id: string | number; operation: Change['operation']; table_name: string; old_row: Row | null; new_row: Row | null; changed_at: string | Date };
  const rows = await queryRows<OutboxRow>(
    db,
    sql`with locked as (
        select id, coalesce(octet_length(old_row::text), 0) + coalesce(octet_length(new_row::text), 0) as bytes
        from webhook_gateway.outbox order by id limit ${limit} for update skip locked),
      taken as (
        select id from (select id, sum(bytes) over (order by id) - bytes as before from locked) as l
        where before < ${maxBytes})
      select o.id, o.operation, o.table_name, o.old_row, o.new_row, o.changed_at
      from webhook_gateway.outbox o where o.id = any(array(select id from taken)) order by o.id`,
    // The ids as an array, not a join to `taken` (see queryRows): planned on an empty outbox, the
    // join read the whole outbox on every batch (57 ms with 146,000 changes waiting, against 2 ms).
    { prepared: true },
  );
  return rows.map((row) => ({
    id: Number(row.id),
    operation: row.operation,
    tableName: row.table_name,
    oldRow: row.old_row,
    newRow: row.new_row,
    changedAt: new Date(row.changed_at),
  }));
}

/**
 * Turns the oldest captured changes (see takeChanges) into messages, in one transaction: write
 * one message per change per matching event and one delivery per message and URL, delete the
 * changes. A crash at any point leaves all or none.
 */
export async function dispatchBatch(
  db: Db,
  config: Config,
  { limit = DISPATCH_BATCH_SIZE, maxBytes = DISPATCH_BATCH_BYTES }: { limit?: number; maxBytes?: number } = {},
): Promise<DispatchResult> {
  return db.transaction(async (tx) => {
    const changes = await takeChanges(tx, limit, maxBytes);
    if (changes.length === 0) return { changes: 0, messages: 0, unrenderable: [], deliveries: [], unqueued: 0 };
    const tables = [...new Set(changes.map((change) => change.tableName))];
    const unrenderable: UnrenderableEvent[] = [];
    // Queries issued together on the transaction's connection travel as one pipeline: one round
    // trip. The URLs go by table, not by the events read (they are not known yet), and the URLs'
    // statement sees its own snapshot: an event deleted or disabled between the two (its change
    // held the webhook's row, so the events' statement waited for it and still returned the
    // event) leaves its webhook out, and that webhook's URLs are read by id.
    const [events, bytea, urls] = await Promise.all([
      activeEventsFor(tx, tables, unrenderable),
      byteaColumnsOf(tx, config.watchedSchema, tables),
      urlsByWebhook(tx, webhooksWatching(tx, tables)),
    ]);
    if (events.size === 0) {
      await deleteChanges(tx, changes);
      return { changes: changes.length, messages: 0, unrenderable, deliveries: [], unqueued: 0 };
    }
    const missing = [...new Set([...events.values()].flat().map((event) => event.webhookId))].filter((id) => !urls.has(id));
    if (missing.length > 0) for (const [id, list] of await urlsByWebhook(tx, missing)) urls.set(id, list);
    const created: NewMessage[] = [];
    const toDeliver: NewDelivery[] = [];
    for (const change of changes) {
      const eventType = EVENT_TYPE_OF[change.operation]!;
      const candidates = events.get(`${change.tableName}\u0000${eventType}`);
      if (!candidates) continue;
      const before = withBase64Bytea(change.oldRow ?? {}, bytea.get(change.tableName));
      const after = withBase64Bytea(change.newRow ?? {}, bytea.get(change.tableName));
      const row = change.operation === 'DELETE' ? before : after;
      for (const event of candidates) {
        if (change.operation === 'UPDATE' && !changesWatchedColumn(event, before, after)) continue;
        const messageId = newTimeOrderedUuid();
        const hook: HookValues = {
          secret: event.secret,
          webhookId: event.webhookId,
          messageId,
          eventId: event.id,
          callId: '',
          accountId: config.accountId,
          eventDate: formatEventDate(change.changedAt),
          eventType,
          objectName: change.tableName,
        };
        const body =
          event.template === undefined
            ? defaultBody({ ...hook, secret: event.secretInDefaultBody ? event.secret : '' }, pickFields(row, event.customPayloadFields))
            : renderTemplate(event.template, hook, row);
        created.push({
          id: messageId,
          webhookId: event.webhookId,
          eventId: event.id,
          eventType,
          objectName: change.tableName,
          body: JSON.stringify(body),
          eventDate: change.changedAt,
        });
        for (const url of urls.get(event.webhookId) ?? []) {
          toDeliver.push({ messageId, webhookId: event.webhookId, eventId: event.id, url, callThrottling: event.callThrottling, throttleEpoch: event.throttleEpoch });
        }
      }
    }
    // In order on the one connection (deliveries reference the messages), pipelined as above. The
    // counts go last: their row, shared with the attempts' counts, stays locked until the commit.
    const [, made] = await Promise.all([
      insertMessages(tx, created, maxBytes),
      insertDeliveries(tx, toDeliver),
      deleteChanges(tx, changes),
      countMessages(tx, created),
    ]);
    return { changes: changes.length, messages: created.length, unrenderable, deliveries: made.queued, unqueued: made.unqueued };
  });
}

export interface DispatcherOptions {
  database: Database;
  config: Config;
  log: Logger;
  /** Where deliveries go. */
  handover: Handover;
  /** The connection that checks whether Redis lost the queue, and the queue's key prefix. */
  redis: Redis;
  redisPrefix: string;
  /** The safety net under LISTEN/NOTIFY: how often the outbox is read anyway. */
  pollIntervalMs?: number;
  /** How often capture triggers are checked against the events (tables dropped or created since). */
  triggerSyncIntervalMs?: number;
}

/**
 * The advisory lock that gives dispatchers turns: one at a time takes changes and hands their
 * deliveries over. Two taking batches at once would book their throttle slots in either order,
 * and a throttled webhook's later messages could go ahead of earlier ones.
 */
const TURN_LOCK = { space: LOCK_SPACE, key: 2 };

/**
 * Runs `turn` holding the dispatchers' turn: a transaction-scoped lock on a connection of its
 * own, let go when the turn ends, or when Postgres ends a session left idle that long (a process
 * hung mid-turn must not stop the others).
 */
function inTurn<T>(db: Db, turn: () => Promise<T>): Promise<T> {
  return db.transaction(async (tx) => {
    await tx.execute(
      sql`select pg_advisory_xact_lock(${TURN_LOCK.space}::int, ${TURN_LOCK.key}::int), set_config('idle_in_transaction_session_timeout', '60s', true)`,
    );
    return turn();
  });
}

/** Reads the outbox as changes arrive (NOTIFY) and at least every poll interval. */
export class Dispatcher {
  private stopping = false;
  private kicked = false;
  private wake: (() => void) | undefined;
  private loopDone: Promise<void> | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private nextTriggerSync = 0;
  private nextQueueCheck = 0;
  private nextStaleCheck = 0;
  /** Where the next check for stale deliveries goes on (a delivery id; 0: from the start). */
  private staleFrom = 0;
  private nextCleanup = 0;
  private queueUnreachable = false;
  /** What this process last set the idle flag to, and when. */
  private idleFlag: { idle: boolean; at: number } | undefined;
  /** Whether deliveries may be waiting unqueued (a redelivery's NOTIFY, a failed handover, a poll). */
  private sweepUnqueued = true;
  private nextUnrenderableReport = 0;

  constructor(private readonly options: DispatcherOptions) {}

  async start(): Promise<void> {
    this.unlisten = await this.options.database.listen(OUTBOX_CHANNEL, () => this.kick());
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loopDone;
    await this.unlisten?.();
  }

  private kick(): void {
    this.kicked = true;
    this.sweepUnqueued = true;
    this.wake?.();
  }

  private async loop(): Promise<void> {
    const { database, config, log } = this.options;
    while (!this.stopping) {
      try {
        if (Date.now() >= this.nextTriggerSync) await this.syncTriggers();
        if (Date.now() >= this.nextCleanup) await this.cleanUp();
        const turn = async () => {
          const batch = await dispatchBatch(database.db, config);
          await this.handOver(batch.deliveries, batch.unqueued);
          return batch;
        };
        // The embedded database has one connection, and one dispatcher.
        const result = database.kind === 'embedded' ? await turn() : await inTurn(database.db, turn);
        if (result.unrenderable.length > 0 && Date.now() >= this.nextUnrenderableReport) {
          // Every batch with a change of such a table finds it again: said once a minute.
          this.nextUnrenderableReport = Date.now() + UNRENDERABLE_REPORT_INTERVAL_MS;
          log.error({ events: result.unrenderable }, 'events whose payload template cannot be rendered made no messages; save their template again');
        }
        if (result.changes > 0) {
          log.debug({ changes: result.changes, messages: result.messages }, 'dispatched changes');
          await this.markIdle(false);
          continue;
        }
        // Just gone idle: a change committed while the flag said busy sent no NOTIFY, so look once more.
        if (await this.markIdle(true)) continue;
      } catch (error) {
        log.error({ err: error }, 'dispatching changes failed; retrying');
      }
      await this.idle(this.options.pollIntervalMs ?? 1000);
      this.sweepUnqueued = true;
    }
  }

  /**
   * Queues the deliveries just made, then any left unqueued. While Redis is away they wait in
   * Postgres (marked unqueued); the sweep for them runs after every NOTIFY (a redelivery sends
   * one), poll and failed handover, so they go once Redis is back.
   */
  private async handOver(made: DeliveryToQueue[], madeUnqueued: number): Promise<void> {
    const { database, handover, redis, redisPrefix, log } = this.options;
    if (madeUnqueued > 0) this.sweepUnqueued = true;
    try {
      try {
        await addDeliveryJobs(handover, made);
      } catch (error) {
        await markUnqueued(database.db, made);
        throw error;
      }
      if (Date.now() >= this.nextQueueCheck) {
        this.nextQueueCheck = Date.now() + QUEUE_CHECK_INTERVAL_MS;
        const requeued = await requeueIfQueueLost(database.db, redis, redisPrefix);
        if (requeued > 0) {
          log.info({ deliveries: requeued }, 'delivery queue (re)built from Postgres');
          this.sweepUnqueued = true;
        }
      }
      if (Date.now() >= this.nextStaleCheck) {
        this.nextStaleCheck = Date.now() + STALE_AFTER_MS / 2;
        this.staleFrom = await requeueStale(database.db, handover, STALE_AFTER_MS, this.staleFrom);
      }
      // Skipped while a run of batches keeps the dispatcher busy: nothing asked for it.
      if (this.sweepUnqueued) {
        this.sweepUnqueued = false;
        // A long sweep (a changed limit rebooks a whole backlog) goes on after the next batch of
        // changes, at once; each turn hands over at least twice what the batch added unqueued, so
        // it catches up however many deliveries each change makes.
        const budget = Math.max(SWEEP_PER_TURN, 2 * madeUnqueued);
        for (let handed = 0; handed < budget; ) {
          const swept = await queueDeliveries(database.db, handover);
          if (swept === 'busy') this.sweepUnqueued = true; // another dispatcher sweeps; look again next turn
          if (swept === 'busy' || swept === 0) break;
          handed += swept;
          if (handed >= budget) this.sweepUnqueued = this.kicked = true;
        }
      }
      if (this.queueUnreachable) log.info('delivery queue reachable again');
      this.queueUnreachable = false;
    } catch (error) {
      this.sweepUnqueued = true;
      if (!this.queueUnreachable) log.warn({ err: (error as Error).message }, 'delivery queue unreachable; deliveries wait in Postgres');
      this.queueUnreachable = true;
    }
  }

  /**
   * Sets the flag the capture triggers read before sending NOTIFY; true when it changed. A busy
   * run of batches writes it once a second, not after every batch: another dispatcher that went
   * idle meanwhile only makes the triggers notify (which serializes commits) until then.
   */
  private async markIdle(idle: boolean): Promise<boolean> {
    if (this.idleFlag?.idle === idle && Date.now() - this.idleFlag.at < IDLE_FLAG_REFRESH_MS) return false;
    const changed = await this.options.database.db
      .update(dispatcherState)
      .set({ idle })
      .where(eq(dispatcherState.idle, !idle))
      .returning({ idle: dispatcherState.idle });
    this.idleFlag = { idle, at: Date.now() };
    return changed.length > 0;
  }

  private async cleanUp(): Promise<void> {
    const { database, config, log } = this.options;
    this.nextCleanup = Date.now() + CLEANUP_INTERVAL_MS;
    const deleted = await deleteExpiredRecords(database.db, config.logRetentionDays);
    if (Object.values(deleted).some((count) => count > 0)) log.info(deleted, 'deleted expired records');
  }

  private async syncTriggers(): Promise<void> {
    const { database, config, log } = this.options;
    const changes = await database.db.transaction((tx) => syncCaptureTriggers(tx, config.watchedSchema));
    if (changes.installed.length + changes.removed.length > 0) log.info(changes, 'capture triggers updated');
    if (changes.missing.length > 0) log.warn({ tables: changes.missing }, 'events name tables that do not exist');
    this.nextTriggerSync = Date.now() + (this.options.triggerSyncIntervalMs ?? 30_000);
  }

  private idle(ms: number): Promise<void> {
    if (this.kicked || this.stopping) {
      this.kicked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        this.kicked = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
