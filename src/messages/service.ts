import { and, desc, eq, lt } from 'drizzle-orm';
import { requirePermission } from '../auth/principal';
import type { ServiceContext } from '../context';
import { AppError, notFound } from '../errors';
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

const encodeCursor = (seq: number) => Buffer.from(`m:${seq}`).toString('base64url');

function decodeCursor(cursor: string): number {
  const match = /^m:(\d+)$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!match) throw new AppError('IncorrectQueryParameter', `'${cursor}' is not a cursor from this API`, 'after');
  return Number(match[1]);
}

function toMessage(row: typeof messages.$inferSelect): Message {
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

/** A webhook's messages, newest first, `first` at a time after the `after` cursor. */
export async function listMessages(
  ctx: ServiceContext,
  query: { webhookId: string; status?: MessageStatus | null; first?: number | null; after?: string | null },
): Promise<MessagePage> {
  requirePermission(ctx.principal, 'webhooks:read');
  const first = query.first ?? 20;
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw new AppError('IncorrectQueryParameter', `must be between 1 and ${MAX_PAGE_SIZE}`, 'first');
  }
  const conditions = [eq(messages.webhookId, query.webhookId)];
  if (query.status) conditions.push(eq(messages.status, query.status));
  if (query.after) conditions.push(lt(messages.seq, decodeCursor(query.after)));
  const rows = await ctx.db
    .select()
    .from(messages)
    .where(and(...conditions))
    .orderBy(desc(messages.seq))
    .limit(first + 1);
  const page = rows.slice(0, first).map(toMessage);
  return { messages: page, hasNextPage: rows.length > first, endCursor: page.at(-1)?.cursor ?? null };
}

export async function getMessage(ctx: ServiceContext, id: string): Promise<Message> {
  requirePermission(ctx.principal, 'webhooks:read');
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id);
  const [row] = uuid ? await ctx.db.select().from(messages).where(eq(messages.id, id)) : [];
  if (!row) throw notFound('Message', id);
  return toMessage(row);
}
