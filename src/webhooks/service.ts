import { and, asc, count, eq, inArray, ne, sql, type SQLWrapper } from 'drizzle-orm';
import { z } from 'zod';
import { displayName, hasPermission, requirePermission } from '../auth/principal';
import { syncCaptureTriggers } from '../capture/triggers';
import type { ServiceContext } from '../context';
import { holdSweeps } from '../delivery/queue';
import { cancelDeliveriesToRemovedUrls, lockUnfinishedDeliveries, rebookWaitingDeliveries, unfinishedDeliveries } from '../delivery/service';
import { statusEvent } from '../delivery/status';
import type { Db } from '../db/database';
import { retryOnDeadlock, violatedUniqueConstraint } from '../db/errors';
import { newShortId } from '../db/ids';
import { badInput, notFound } from '../errors';
import { webhookEvents } from '../events/tables';
import { deliveryStats, type DeliveryStats } from '../messages/stats';
import { checkLookupKey, expected, parseInput } from '../validation';
import { afterRotation, newWebhookSecret } from './secrets';
import { webhooks, webhookUrls } from './tables';
import { findForbiddenTarget, parseTargetUrl } from './targetUrls';

export interface Webhook {
  id: string;
  name: string;
  description: string;
  outgoingUrls: string[];
  callThrottling: number;
  enabled: boolean;
  defaultPayloadIncludesSecret: boolean;
  /** Left out for profiles without `webhooks:write`. */
  secret?: string;
  dateCreated: Date;
  createdBy: string;
  lastModified: Date;
  modifiedBy: string;
}

export const MAX_DESCRIPTION_LENGTH = 2000;

function inputSchema(ctx: ServiceContext) {
  const { callThrottlingMax, multicastMaxUrls } = ctx.config;
  return z.object({
    name: z
      .string(expected('a string'))
      .min(1, 'is required')
      .max(255, 'must be at most 255 characters')
      .refine((name) => name.trim() !== '', 'must not be blank'),
    description: z
      .string(expected('a string'))
      .max(MAX_DESCRIPTION_LENGTH, `must be at most ${MAX_DESCRIPTION_LENGTH} characters`)
      .nullable()
      .transform((text) => text ?? ''),
    outgoingUrls: z
      .array(z.string(expected('a URL string')), expected('an array of URLs'))
      .min(1, 'must hold at least one URL')
      .max(multicastMaxUrls, `must hold at most ${multicastMaxUrls} URLs (MULTICAST_MAX_URLS)`),
    // 0 or null means the plan maximum.
    callThrottling: z
      .number(expected('an integer'))
      .int('must be an integer')
      .min(0, 'must not be negative')
      .max(callThrottlingMax, `must be at most ${callThrottlingMax} calls per second (CALL_THROTTLING_MAX)`)
      .nullable()
      .transform((limit) => (limit ? limit : callThrottlingMax)),
    enabled: z.boolean(expected('true or false')),
    defaultPayloadIncludesSecret: z.boolean(expected('true or false')),
  });
}

// `extend` with the required fields' own schemas keeps their 'is required' message.
function createSchema(ctx: ServiceContext) {
  const fields = inputSchema(ctx);
  return fields.partial().extend({ name: fields.shape.name, outgoingUrls: fields.shape.outgoingUrls });
}
const updateSchema = (ctx: ServiceContext) => inputSchema(ctx).partial();

/** Canonical, distinct, allowed target URLs, or a 400 naming the first one that is not. */
async function checkOutgoingUrls(ctx: ServiceContext, urls: string[]): Promise<string[]> {
  const policy = { allowPrivateTargets: ctx.config.allowPrivateTargets };
  const parsed = urls.map((text, index) => {
    const result = parseTargetUrl(text, policy);
    if ('problem' in result) throw badInput(`outgoingUrls.${index}`, result.problem);
    return result.url;
  });
  const seen = new Set<string>();
  parsed.forEach((url, index) => {
    if (seen.has(url.href)) throw badInput(`outgoingUrls.${index}`, `'${url.href}' is listed twice`);
    seen.add(url.href);
  });
  const problems = await Promise.all(parsed.map((url) => findForbiddenTarget(url, policy)));
  const index = problems.findIndex((problem) => problem !== undefined);
  if (index >= 0) throw badInput(`outgoingUrls.${index}`, problems[index]!);
  return parsed.map((url) => url.href);
}

async function refuseUrlsOfOtherWebhooks(db: Db, webhookId: string, urls: string[]): Promise<void> {
  const [taken] = await db
    .select({ url: webhookUrls.url, webhookId: webhookUrls.webhookId })
    .from(webhookUrls)
    .where(and(inArray(webhookUrls.url, urls), ne(webhookUrls.webhookId, webhookId)))
    .limit(1);
  if (taken) {
    throw badInput(`outgoingUrls.${urls.indexOf(taken.url)}`, `'${taken.url}' already belongs to webhook '${taken.webhookId}'`);
  }
}

async function replaceUrls(db: Db, webhookId: string, urls: string[]): Promise<void> {
  await refuseUrlsOfOtherWebhooks(db, webhookId, urls);
  await db.delete(webhookUrls).where(eq(webhookUrls.webhookId, webhookId));
  await db.insert(webhookUrls).values(urls.map((url, position) => ({ url, webhookId, position })));
}

/** Turns a unique violation into the 400 a user can act on; anything else is rethrown. */
function explainConflict(error: unknown, name: string | undefined): never {
  const constraint = violatedUniqueConstraint(error);
  if (constraint === 'webhooks_name_unique') throw badInput('name', `a webhook named '${name}' already exists`);
  if (constraint === 'webhook_urls_pkey') throw badInput('outgoingUrls', 'a URL already belongs to another webhook');
  throw error;
}

type WebhookRow = typeof webhooks.$inferSelect;

function toWebhook(ctx: ServiceContext, row: WebhookRow, outgoingUrls: string[]): Webhook {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    outgoingUrls,
    // The limit in force: a value stored under a higher CALL_THROTTLING_MAX shows as the current one.
    callThrottling: Math.min(row.callThrottling, ctx.config.callThrottlingMax),
    enabled: row.enabled,
    defaultPayloadIncludesSecret: row.defaultPayloadIncludesSecret,
    secret: hasPermission(ctx.principal, 'webhooks:write') ? row.secret : undefined,
    dateCreated: row.createdAt,
    createdBy: row.createdBy,
    lastModified: row.modifiedAt,
    modifiedBy: row.modifiedBy,
  };
}

/** The URLs of the webhooks given, or of those a sub-select names, each webhook's in their order. */
export async function urlsByWebhook(db: Db, webhookIds: string[] | SQLWrapper): Promise<Map<string, string[]>> {
  const byWebhook = new Map<string, string[]>();
  if (Array.isArray(webhookIds) && webhookIds.length === 0) return byWebhook;
  const rows = await db
    .select()
    .from(webhookUrls)
    .where(inArray(webhookUrls.webhookId, webhookIds))
    .orderBy(asc(webhookUrls.webhookId), asc(webhookUrls.position));
  for (const { webhookId, url } of rows) {
    const urls = byWebhook.get(webhookId);
    if (urls) urls.push(url);
    else byWebhook.set(webhookId, [url]);
  }
  return byWebhook;
}

async function loadWebhook(ctx: ServiceContext, db: Db, id: string): Promise<Webhook> {
  const [row] = await db.select().from(webhooks).where(eq(webhooks.id, id));
  if (!row) throw notFound('Webhook', id);
  const urls = await urlsByWebhook(db, [id]);
  return toWebhook(ctx, row, urls.get(id) ?? []);
}

export async function listWebhooks(ctx: ServiceContext): Promise<Webhook[]> {
  requirePermission(ctx.principal, 'webhooks:read');
  const rows = await ctx.db.select().from(webhooks).orderBy(asc(webhooks.createdAt), asc(webhooks.id));
  const urls = await urlsByWebhook(
    ctx.db,
    rows.map((row) => row.id),
  );
  return rows.map((row) => toWebhook(ctx, row, urls.get(row.id) ?? []));
}

export async function getWebhook(ctx: ServiceContext, id: string): Promise<Webhook> {
  requirePermission(ctx.principal, 'webhooks:read');
  checkLookupKey('Webhook', id);
  return loadWebhook(ctx, ctx.db, id);
}

export async function createWebhook(ctx: ServiceContext, input: unknown): Promise<Webhook> {
  requirePermission(ctx.principal, 'webhooks:write');
  const fields = parseInput(createSchema(ctx), input);
  const outgoingUrls = await checkOutgoingUrls(ctx, fields.outgoingUrls);
  const actor = displayName(ctx.principal);
  for (let attempt = 1; ; attempt++) {
    const id = newShortId();
    try {
      return await ctx.db.transaction(async (tx) => {
        await tx.insert(webhooks).values({
          id,
          name: fields.name,
          description: fields.description ?? '',
          callThrottling: fields.callThrottling ?? ctx.config.callThrottlingMax,
          enabled: fields.enabled ?? true,
          defaultPayloadIncludesSecret: fields.defaultPayloadIncludesSecret ?? false,
          secret: newWebhookSecret(),
          createdBy: actor,
          modifiedBy: actor,
        });
        await replaceUrls(tx, id, outgoingUrls);
        return loadWebhook(ctx, tx, id);
      });
    } catch (error) {
      // Six characters leave room for a rare id collision: draw again.
      if (violatedUniqueConstraint(error) === 'webhooks_pkey' && attempt < 5) continue;
      explainConflict(error, fields.name);
    }
  }
}

export async function updateWebhook(ctx: ServiceContext, id: string, input: unknown): Promise<Webhook> {
  requirePermission(ctx.principal, 'webhooks:write');
  const fields = parseInput(updateSchema(ctx), input);
  checkLookupKey('Webhook', id);
  const outgoingUrls = fields.outgoingUrls && (await checkOutgoingUrls(ctx, fields.outgoingUrls));
  const limitInForce = (callThrottling: number) => Math.min(callThrottling, ctx.config.callThrottlingMax);
  try {
    // Rebooking or cancelling the waiting deliveries locks them before the webhook's row (see
    // lockUnfinishedDeliveries); should the attempt recorder meet it still, the loser tries again.
    const { webhook, cancelled } = await retryOnDeadlock(() =>
      ctx.db.transaction(async (tx) => {
        // A change of the limit rebooks the waiting deliveries; the sweep's lock goes first.
        if (fields.callThrottling !== undefined) await holdSweeps(tx);
        const [current] = await tx
          .select({ callThrottling: webhooks.callThrottling })
          .from(webhooks)
          .where(eq(webhooks.id, id))
          .for('no key update');
        if (!current) throw notFound('Webhook', id);
        const throttlingChanged =
          fields.callThrottling !== undefined && limitInForce(fields.callThrottling) !== limitInForce(current.callThrottling);
        if (throttlingChanged || outgoingUrls) {
          await lockUnfinishedDeliveries(tx, id);
          // A stronger lock: it waits for the dispatcher batches that read the webhook's limit and
          // URLs (see activeEventsFor), so that their deliveries to a URL taken off are cancelled
          // below, and later batches read the new URLs.
          await tx.select({ id: webhooks.id }).from(webhooks).where(eq(webhooks.id, id)).for('update');
        }
        await tx
          .update(webhooks)
          .set({
            name: fields.name,
            description: fields.description,
            callThrottling: fields.callThrottling,
            throttleEpoch: throttlingChanged ? sql`${webhooks.throttleEpoch} + 1` : undefined,
            enabled: fields.enabled,
            defaultPayloadIncludesSecret: fields.defaultPayloadIncludesSecret,
            modifiedAt: new Date(),
            modifiedBy: displayName(ctx.principal),
          })
          .where(eq(webhooks.id, id));
        // The new limit applies to the messages already waiting, too.
        if (throttlingChanged) await rebookWaitingDeliveries(tx, id);
        if (outgoingUrls) await replaceUrls(tx, id, outgoingUrls);
        // Calls stop to the URLs taken away: their deliveries not yet done are cancelled.
        const cancelled = outgoingUrls ? await cancelDeliveriesToRemovedUrls(tx, id) : [];
        if (fields.enabled !== undefined) {
          // Enabled switches the Status of all the webhook's events (Caspio's semantics).
          await tx.update(webhookEvents).set({ enabled: fields.enabled }).where(eq(webhookEvents.webhookId, id));
          await syncCaptureTriggers(tx, ctx.config.watchedSchema);
        }
        return { webhook: await loadWebhook(ctx, tx, id), cancelled };
      }),
    );
    ctx.status.publish(cancelled.map((delivery) => statusEvent(delivery, 'CANCELLED', delivery.attempts)));
    return webhook;
  } catch (error) {
    explainConflict(error, fields.name);
  }
}

/**
 * Deletes the webhook with its events (and their capture triggers, when no other webhook needs
 * them) and its message log; deliveries not yet done are cancelled, which live subscribers see.
 */
export async function deleteWebhook(ctx: ServiceContext, id: string): Promise<void> {
  requirePermission(ctx.principal, 'webhooks:write');
  checkLookupKey('Webhook', id);
  // The delete's cascade deletes the webhook's messages, then their deliveries: the deliveries
  // the attempt recorder may be changing are locked first (see lockUnfinishedDeliveries). A
  // delivery made after that and recorded before the delete can still meet it: the loser tries again.
  const cancelled = await retryOnDeadlock(() =>
    ctx.db.transaction(async (tx) => {
      await lockUnfinishedDeliveries(tx, id);
      const unfinished = await unfinishedDeliveries(tx, id);
      const deleted = await tx.delete(webhooks).where(eq(webhooks.id, id)).returning({ id: webhooks.id });
      if (deleted.length === 0) throw notFound('Webhook', id);
      await syncCaptureTriggers(tx, ctx.config.watchedSchema);
      return unfinished;
    }),
  );
  ctx.status.publish(cancelled.map((delivery) => statusEvent(delivery, 'CANCELLED', delivery.attempts)));
}

export interface WebhookStats extends DeliveryStats {
  events: number;
}

/** The counts GET /outgoingWebhooks/{id} adds: events, and messages, calls and errors of the last 30 days. */
export async function getWebhookStats(ctx: ServiceContext, id: string): Promise<WebhookStats> {
  requirePermission(ctx.principal, 'webhooks:read');
  const [events] = await ctx.db.select({ count: count() }).from(webhookEvents).where(eq(webhookEvents.webhookId, id));
  return { events: events?.count ?? 0, ...(await deliveryStats(ctx.db, { webhookId: id })) };
}

const DAY_MS = 24 * 3_600_000;

/**
 * A new secret; the old one keeps signing beside it for SECRET_ROTATION_OVERLAP, as do those
 * replaced before it until their own overlap ends.
 */
export async function regenerateWebhookSecret(ctx: ServiceContext, id: string): Promise<Webhook> {
  requirePermission(ctx.principal, 'webhooks:write');
  checkLookupKey('Webhook', id);
  return ctx.db.transaction(async (tx) => {
    const [current] = await tx
      .select({ secret: webhooks.secret, previousSecrets: webhooks.previousSecrets })
      .from(webhooks)
      .where(eq(webhooks.id, id))
      .for('update');
    if (!current) throw notFound('Webhook', id);
    const now = Date.now();
    await tx
      .update(webhooks)
      .set({
        secret: newWebhookSecret(),
        previousSecrets: afterRotation(current.secret, current.previousSecrets, now, {
          overlapMs: ctx.config.secretRotationOverlapMs,
          // A message made just before the rotation is retried for the whole schedule, and each
          // attempt (a receiver may echo the body) is kept for the retention after it.
          keptForMs: ctx.config.logRetentionDays * DAY_MS + ctx.config.retryScheduleMs.reduce((sum, ms) => sum + ms, 0),
        }),
        modifiedAt: new Date(now),
        modifiedBy: displayName(ctx.principal),
      })
      .where(eq(webhooks.id, id));
    return loadWebhook(ctx, tx, id);
  });
}
