import { and, asc, eq, ne } from 'drizzle-orm';
import { z } from 'zod';
import { displayName, requirePermission } from '../auth/principal';
import { syncCaptureTriggers } from '../capture/triggers';
import type { ServiceContext } from '../context';
import type { Db } from '../db/database';
import { violatedUniqueConstraint } from '../db/errors';
import { newShortId } from '../db/ids';
import { badInput, notFound } from '../errors';
import { parsePayloadTemplate } from '../messages/payload';
import { deliveryStats, type DeliveryStats } from '../messages/stats';
import { tableColumns } from '../tables/catalog';
import { webhooks } from '../webhooks/tables';
import { checkLookupKey, expected, parseInput } from '../validation';
import { EVENT_TYPES, webhookEvents, type EventType } from './tables';

export const EVENT_SOURCES = [
  'Datasheet',
  'DataPages',
  'DataParts',
  'Extensions',
  'RESTAPIs',
  'TriggeredActions',
  'Tasks',
] as const;

export interface WebhookEvent {
  id: string;
  webhookId: string;
  type: EventType;
  status: 'Active' | 'Inactive';
  objectName: string;
  objectFields: string[];
  eventSources: string[];
  customPayloadFields: string[];
  customPayloadTemplate: string;
  dateCreated: Date;
  createdBy: string;
  lastModified: Date;
  modifiedBy: string;
}

const columnList = (what: string) =>
  z
    .array(z.string(expected('a column name')).min(1), expected(`a list of ${what}`))
    .max(1000)
    .superRefine((names, ctx) => {
      const index = names.findIndex((name, at) => names.indexOf(name) !== at);
      if (index >= 0) ctx.addIssue({ code: 'custom', path: [index], message: `'${names[index]}' is listed twice` });
    })
    .nullable()
    .transform((list) => list ?? []);

const eventFields = z.object({
  eventType: z.enum(EVENT_TYPES, expected(`one of ${EVENT_TYPES.join(', ')}`)),
  objectName: z.string(expected('a table name')).min(1, 'is required').max(63, 'must be at most 63 characters'),
  objectFields: columnList('column names'),
  eventSources: z
    .array(z.enum(EVENT_SOURCES, expected(`one of ${EVENT_SOURCES.join(', ')}`)), expected('a list of event sources'))
    .nullable()
    .transform((list) => [...new Set(list ?? [])]),
  customPayloadFields: columnList('column names'),
  customPayloadTemplate: z
    .string(expected('a string'))
    .nullable()
    .transform((text) => text ?? ''),
  enabled: z.boolean(expected('true or false')),
});
// `extend` with the required fields' own schemas keeps their 'is required' message.
const createSchema = eventFields.partial().extend({
  eventType: eventFields.shape.eventType,
  objectName: eventFields.shape.objectName,
});
const updateSchema = eventFields.partial();

type EventRow = typeof webhookEvents.$inferSelect;
type EventDefinition = Pick<
  EventRow,
  'eventType' | 'objectName' | 'objectFields' | 'customPayloadFields' | 'customPayloadTemplate'
>;

function toEvent(row: EventRow, webhookEnabled: boolean): WebhookEvent {
  return {
    id: row.id,
    webhookId: row.webhookId,
    type: row.eventType,
    status: row.enabled && webhookEnabled ? 'Active' : 'Inactive',
    objectName: row.objectName,
    objectFields: row.objectFields,
    eventSources: row.eventSources,
    customPayloadFields: row.customPayloadFields,
    customPayloadTemplate: row.customPayloadTemplate,
    dateCreated: row.createdAt,
    createdBy: row.createdBy,
    lastModified: row.modifiedAt,
    modifiedBy: row.modifiedBy,
  };
}

/**
 * Whether the webhook is enabled; 404 when there is none. With `lock`, the webhook row is held
 * for the transaction, so that event rules are checked against a stable set of events.
 */
async function webhookEnabled(db: Db, webhookId: string, lock = false): Promise<boolean> {
  checkLookupKey('Webhook', webhookId);
  const query = db.select({ enabled: webhooks.enabled }).from(webhooks).where(eq(webhooks.id, webhookId));
  const [webhook] = lock ? await query.for('update') : await query;
  if (!webhook) throw notFound('Webhook', webhookId);
  return webhook.enabled;
}

/** The table must exist in the watched schema, and every column the event names must be one of its columns. */
async function checkAgainstTable(ctx: ServiceContext, db: Db, event: EventDefinition): Promise<void> {
  const columns = await tableColumns(db, ctx.config.watchedSchema, event.objectName);
  if (!columns) {
    throw badInput('objectName', `table '${event.objectName}' was not found in schema '${ctx.config.watchedSchema}'`);
  }
  const known = new Set(columns.map((column) => column.name));
  const checkColumns = (field: string, names: string[]) => {
    names.forEach((name, index) => {
      if (!known.has(name)) throw badInput(`${field}.${index}`, `'${name}' is not a column of table '${event.objectName}'`);
    });
  };
  if (event.objectFields.length > 0 && event.eventType !== 'table.recordUpdate') {
    throw badInput('objectFields', 'applies to table.recordUpdate events only');
  }
  checkColumns('objectFields', event.objectFields);
  checkColumns('customPayloadFields', event.customPayloadFields);
  if (event.customPayloadTemplate !== '') {
    let fields: string[];
    try {
      fields = parsePayloadTemplate(event.customPayloadTemplate).fields;
    } catch (error) {
      throw badInput('customPayloadTemplate', (error as Error).message);
    }
    const unknown = fields.find((name) => !known.has(name));
    if (unknown) {
      throw badInput('customPayloadTemplate', `[@field:${unknown}] names no column of table '${event.objectName}'`);
    }
  }
}

/**
 * Per webhook and table: at most one recordInsert, one recordDelete, and either one all-columns
 * recordUpdate or several recordUpdate events on different columns.
 */
async function checkEventRules(db: Db, webhookId: string, event: EventDefinition, exceptId: string): Promise<void> {
  const siblings = await db
    .select({ id: webhookEvents.id, objectFields: webhookEvents.objectFields })
    .from(webhookEvents)
    .where(
      and(
        eq(webhookEvents.webhookId, webhookId),
        eq(webhookEvents.objectName, event.objectName),
        eq(webhookEvents.eventType, event.eventType),
        ne(webhookEvents.id, exceptId),
      ),
    );
  if (siblings.length === 0) return;
  if (event.eventType !== 'table.recordUpdate') {
    throw badInput('eventType', `the webhook already has a ${event.eventType} event ('${siblings[0]!.id}') for table '${event.objectName}'`);
  }
  const allColumns = siblings.find((sibling) => sibling.objectFields.length === 0);
  if (allColumns || event.objectFields.length === 0) {
    const other = allColumns ?? siblings[0]!;
    throw badInput(
      'objectFields',
      `an all-columns table.recordUpdate event cannot share table '${event.objectName}' with another recordUpdate event ('${other.id}')`,
    );
  }
  for (const sibling of siblings) {
    const shared = event.objectFields.find((column) => sibling.objectFields.includes(column));
    if (shared) throw badInput('objectFields', `column '${shared}' is already watched by event '${sibling.id}'`);
  }
}

async function loadEvent(db: Db, webhookId: string, eventId: string): Promise<EventRow> {
  checkLookupKey('Event', eventId);
  const [row] = await db
    .select()
    .from(webhookEvents)
    .where(and(eq(webhookEvents.webhookId, webhookId), eq(webhookEvents.id, eventId)));
  if (!row) throw notFound('Event', eventId);
  return row;
}

export async function listEvents(ctx: ServiceContext, webhookId: string): Promise<WebhookEvent[]> {
  requirePermission(ctx.principal, 'webhooks:read');
  const enabled = await webhookEnabled(ctx.db, webhookId);
  const rows = await ctx.db
    .select()
    .from(webhookEvents)
    .where(eq(webhookEvents.webhookId, webhookId))
    .orderBy(asc(webhookEvents.createdAt), asc(webhookEvents.id));
  return rows.map((row) => toEvent(row, enabled));
}

export async function getEvent(ctx: ServiceContext, webhookId: string, eventId: string): Promise<WebhookEvent> {
  requirePermission(ctx.principal, 'webhooks:read');
  const enabled = await webhookEnabled(ctx.db, webhookId);
  return toEvent(await loadEvent(ctx.db, webhookId, eventId), enabled);
}

export async function getEventStats(ctx: ServiceContext, eventId: string): Promise<DeliveryStats> {
  requirePermission(ctx.principal, 'webhooks:read');
  return deliveryStats(ctx.db, { eventId });
}

export async function createEvent(ctx: ServiceContext, webhookId: string, input: unknown): Promise<WebhookEvent> {
  requirePermission(ctx.principal, 'webhooks:write');
  const fields = parseInput(createSchema, input);
  const actor = displayName(ctx.principal);
  for (let attempt = 1; ; attempt++) {
    try {
      return await ctx.db.transaction(async (tx) => {
        const enabled = await webhookEnabled(tx, webhookId, true);
        const definition: EventDefinition = {
          eventType: fields.eventType,
          objectName: fields.objectName,
          objectFields: fields.objectFields ?? [],
          customPayloadFields: fields.customPayloadFields ?? [],
          customPayloadTemplate: fields.customPayloadTemplate ?? '',
        };
        await checkAgainstTable(ctx, tx, definition);
        await checkEventRules(tx, webhookId, definition, '');
        const [row] = await tx
          .insert(webhookEvents)
          .values({
            ...definition,
            id: newShortId(),
            webhookId,
            eventSources: fields.eventSources ?? [],
            enabled: fields.enabled ?? true,
            createdBy: actor,
            modifiedBy: actor,
          })
          .returning();
        await syncCaptureTriggers(tx, ctx.config.watchedSchema);
        return toEvent(row!, enabled);
      });
    } catch (error) {
      // Six characters leave room for a rare id collision: draw again.
      if (violatedUniqueConstraint(error) === 'webhook_events_pkey' && attempt < 5) continue;
      throw error;
    }
  }
}

export async function updateEvent(
  ctx: ServiceContext,
  webhookId: string,
  eventId: string,
  input: unknown,
): Promise<WebhookEvent> {
  requirePermission(ctx.principal, 'webhooks:write');
  const fields = parseInput(updateSchema, input);
  return ctx.db.transaction(async (tx) => {
    const enabled = await webhookEnabled(tx, webhookId, true);
    const current = await loadEvent(tx, webhookId, eventId);
    const definition: EventDefinition = {
      eventType: fields.eventType ?? current.eventType,
      objectName: fields.objectName ?? current.objectName,
      objectFields: fields.objectFields ?? current.objectFields,
      customPayloadFields: fields.customPayloadFields ?? current.customPayloadFields,
      customPayloadTemplate: fields.customPayloadTemplate ?? current.customPayloadTemplate,
    };
    await checkAgainstTable(ctx, tx, definition);
    await checkEventRules(tx, webhookId, definition, eventId);
    const [row] = await tx
      .update(webhookEvents)
      .set({
        ...definition,
        eventSources: fields.eventSources,
        enabled: fields.enabled,
        modifiedAt: new Date(),
        modifiedBy: displayName(ctx.principal),
      })
      .where(eq(webhookEvents.id, eventId))
      .returning();
    await syncCaptureTriggers(tx, ctx.config.watchedSchema);
    return toEvent(row!, enabled);
  });
}

export async function deleteEvent(ctx: ServiceContext, webhookId: string, eventId: string): Promise<void> {
  requirePermission(ctx.principal, 'webhooks:write');
  await ctx.db.transaction(async (tx) => {
    await webhookEnabled(tx, webhookId, true);
    checkLookupKey('Event', eventId);
    const deleted = await tx
      .delete(webhookEvents)
      .where(and(eq(webhookEvents.webhookId, webhookId), eq(webhookEvents.id, eventId)))
      .returning({ id: webhookEvents.id });
    if (deleted.length === 0) throw notFound('Event', eventId);
    await syncCaptureTriggers(tx, ctx.config.watchedSchema);
  });
}
