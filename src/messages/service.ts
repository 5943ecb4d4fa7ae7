import { and, desc, eq, getTableColumns, inArray, lt, sql } from 'drizzle-orm';
import { hasPermission, requirePermission } from '../auth/principal';
import type { ServiceContext } from '../context';
import { messageStatusOf } from '../delivery/tables';
import { AppError, notFound } from '../errors';
import { webhooks } from '../webhooks/tables';
import { checkLookupKey } from '../validation';
import { messages, type MessageStatus } from './tables';

export interface Message {
  id: string;
  webhookId: string;
  eventId: string;
  eventType: string;
  objectName: string;
  status: MessageStatus;
  /** The JSON body as the receiver gets it. */
  body: string;
  eventDate: Date;
  dateCreated: Date;
  /** Opaque paging position. */
  cursor: string;
}

export interface MessagePage {
  messages: Message[];
  hasNextPage: boolean;
  endCursor: string | null;
}

export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 20;

const encodeCursor = (seq: number) => Buffer.from(`m:${seq}`).toString('base64url');

function decodeCursor(cursor: string): number {
  const match = /^m:(\d+)$/.exec(Buffer.from(cursor, 'base64url').toString());
  const seq = Number(match?.[1]);
  // Sequence numbers are read as JavaScript numbers, so no cursor made here holds a larger one (Postgres refuses those past bigint).
  if (!Number.isSafeInteger(seq)) throw new AppError('IncorrectQueryParameter', `'${cursor}' is not a cursor from this API`, 'after');
  return seq;
}

const messageColumns = { ...getTableColumns(messages), status: messageStatusOf(sql`webhook_gateway.messages.id`) };
type MessageRow = typeof messages.$inferSelect & { status: MessageStatus };

/** What a message body shows in place of the webhook's secret to a profile that may not see it. */
export const HIDDEN_SECRET = '[secret hidden]';

/**
 * A body may carry its webhook's secret (DefaultPayloadIncludesSecret, or a template's
 * `[@out-hook:secret]`), and so may a receiver's answer (one that echoes what it got). Profiles
 * without `webhooks:write` are not shown the secret anywhere: for them this hides it (the current
 * one, and those it replaced) in texts of the given webhooks; for the others it leaves texts as
 * they are.
 */
export async function secretHider(ctx: ServiceContext, webhookIds: string[]): Promise<(webhookId: string, text: string) => string> {
  if (hasPermission(ctx.principal, 'webhooks:write') || webhookIds.length === 0) return (_webhookId, text) => text;
  const secrets = await ctx.db
    .select({ id: webhooks.id, secret: webhooks.secret, previousSecrets: webhooks.previousSecrets })
    .from(webhooks)
    .where(inArray(webhooks.id, [...new Set(webhookIds)]));
  const secretsOf = new Map(secrets.map((webhook) => [webhook.id, [webhook.secret, ...webhook.previousSecrets.map((entry) => entry.secret)]]));
  return (webhookId, text) => {
    for (const secret of secretsOf.get(webhookId) ?? []) text = text.replaceAll(secret, HIDDEN_SECRET);
    return text;
  };
}

async function readableBy(ctx: ServiceContext, rows: MessageRow[]): Promise<Message[]> {
  const hide = await secretHider(ctx, rows.map((row) => row.webhookId));
  return rows.map((row) => toMessage({ ...row, body: hide(row.webhookId, row.body) }));
}

function toMessage(row: MessageRow): Message {
  return {
    id: row.id,
    webhookId: row.webhookId,
    eventId: row.eventId,
    eventType: row.eventType,
    objectName: row.objectName,
    status: row.status,
    body: row.body,
    eventDate: row.eventDate,
    dateCreated: row.createdAt,
    cursor: encodeCursor(row.seq),
  };
}

async function requireWebhook(ctx: ServiceContext, webhookId: string): Promise<void> {
  const [webhook] = await ctx.db.select({ id: webhooks.id }).from(webhooks).where(eq(webhooks.id, webhookId));
  if (!webhook) throw notFound('Webhook', webhookId);
}

/** A webhook's messages, newest first, `first` at a time after the `after` cursor. */
export async function listMessages(
  ctx: ServiceContext,
  query: { webhookId: string; status?: MessageStatus | null; first?: number | null; after?: string | null },
): Promise<MessagePage> {
  requirePermission(ctx.principal, 'webhooks:read');
  checkLookupKey('Webhook', query.webhookId);
  const first = query.first ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw new AppError('IncorrectQueryParameter', `must be between 1 and ${MAX_PAGE_SIZE}`, 'first');
  }
  const conditions = [eq(messages.webhookId, query.webhookId)];
  if (query.status) conditions.push(sql`${messageStatusOf(sql`webhook_gateway.messages.id`)} = ${query.status}`);
  if (query.after) conditions.push(lt(messages.seq, decodeCursor(query.after)));
  const rows = await ctx.db
    .select(messageColumns)
    .from(messages)
    .where(and(...conditions))
    .orderBy(desc(messages.seq))
    .limit(first + 1);
  // Messages go with their webhook, so only an empty page can mean that there is no such webhook.
  if (rows.length === 0) await requireWebhook(ctx, query.webhookId);
  const page = await readableBy(ctx, rows.slice(0, first));
  return { messages: page, hasNextPage: rows.length > first, endCursor: page.at(-1)?.cursor ?? null };
}

export async function getMessage(ctx: ServiceContext, id: string): Promise<Message> {
  requirePermission(ctx.principal, 'webhooks:read');
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id);
  const [row] = uuid ? await ctx.db.select(messageColumns).from(messages).where(eq(messages.id, id)) : [];
  if (!row) throw notFound('Message', id);
  const [message] = await readableBy(ctx, [row]);
  return message!;
}
