import { Hono, type Context } from 'hono';
import { requirePermission } from '../auth/principal';
import type { ApiRateLimiter } from '../auth/rateLimit';
import { authenticateBearer } from '../auth/tokens';
import type { Config } from '../config';
import type { ServiceContext } from '../context';
import type { Db } from '../db/database';
import { AppError, notFound } from '../errors';
import { redeliverFailedMessages, redeliverMessage } from '../delivery/service';
import type { StatusPublisher } from '../delivery/status';
import { getMessage } from '../messages/service';
import type { HttpEnv } from '../server/env';
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  getWebhookStats,
  listWebhooks,
  regenerateWebhookSecret,
  updateWebhook,
} from '../webhooks/service';
import { createEvent, deleteEvent, getEvent, getEventStats, listEvents, updateEvent } from '../events/service';
import { getTableFields, listTables } from '../tables/catalog';
import { isJsonMediaType } from '../validation';
import { fromRestShape, toRestShape } from './shape';

interface RestRequest {
  ctx: ServiceContext;
  params: Record<string, string>;
  body: unknown;
}

type RestResult = { status: 200 | 201 | 202; body: unknown } | { status: 204 };

interface RestRoute {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  handle(request: RestRequest): Promise<RestResult>;
}

const ok = (body: unknown): RestResult => ({ status: 200, body });
const created = (body: unknown): RestResult => ({ status: 201, body });
const accepted = (body: unknown): RestResult => ({ status: 202, body });
const noContent: RestResult = { status: 204 };
const list = (items: object[]) => ok({ Result: items.map(toRestShape) });

/** Caspio's REST API as a table of routes onto the same services GraphQL uses. */
export const REST_ROUTES: RestRoute[] = [
  {
    method: 'GET',
    path: '/outgoingWebhooks',
    handle: async ({ ctx }) => list(await listWebhooks(ctx)),
  },
  {
    method: 'POST',
    path: '/outgoingWebhooks',
    handle: async ({ ctx, body }) => created(toRestShape(await createWebhook(ctx, fromRestShape(body)))),
  },
  {
    method: 'GET',
    path: '/outgoingWebhooks/:webhookId',
    handle: async ({ ctx, params }) => {
      const webhook = await getWebhook(ctx, params.webhookId!);
      return ok(toRestShape({ ...webhook, ...(await getWebhookStats(ctx, webhook.id)) }));
    },
  },
  {
    method: 'PUT',
    path: '/outgoingWebhooks/:webhookId',
    handle: async ({ ctx, params, body }) =>
      ok(toRestShape(await updateWebhook(ctx, params.webhookId!, fromRestShape(body)))),
  },
  {
    method: 'DELETE',
    path: '/outgoingWebhooks/:webhookId',
    handle: async ({ ctx, params }) => {
      await deleteWebhook(ctx, params.webhookId!);
      return noContent;
    },
  },
  {
    method: 'PATCH',
    path: '/outgoingWebhooks/:webhookId/regenerateSecret',
    handle: async ({ ctx, params }) => ok(toRestShape(await regenerateWebhookSecret(ctx, params.webhookId!))),
  },
  {
    method: 'GET',
    path: '/outgoingWebhooks/:webhookId/events',
    handle: async ({ ctx, params }) => list(await listEvents(ctx, params.webhookId!)),
  },
  {
    method: 'POST',
    path: '/outgoingWebhooks/:webhookId/events',
    handle: async ({ ctx, params, body }) =>
      created(toRestShape(await createEvent(ctx, params.webhookId!, fromRestShape(body)))),
  },
  {
    method: 'GET',
    path: '/outgoingWebhooks/:webhookId/events/:eventId',
    handle: async ({ ctx, params }) => {
      const event = await getEvent(ctx, params.webhookId!, params.eventId!);
      return ok(toRestShape({ ...event, ...(await getEventStats(ctx, event.id)) }));
    },
  },
  {
    method: 'PUT',
    path: '/outgoingWebhooks/:webhookId/events/:eventId',
    handle: async ({ ctx, params, body }) =>
      ok(toRestShape(await updateEvent(ctx, params.webhookId!, params.eventId!, fromRestShape(body)))),
  },
  {
    method: 'DELETE',
    path: '/outgoingWebhooks/:webhookId/events/:eventId',
    handle: async ({ ctx, params }) => {
      await deleteEvent(ctx, params.webhookId!, params.eventId!);
      return noContent;
    },
  },
  {
    method: 'POST',
    path: '/outgoingWebhooks/:webhookId/messages/:messageId/redeliver',
    handle: async ({ ctx, params }) => {
      await getWebhook(ctx, params.webhookId!);
      const message = await getMessage(ctx, params.messageId!);
      if (message.webhookId !== params.webhookId) throw notFound('Message', params.messageId!);
      const { cursor: _cursor, ...redelivered } = await redeliverMessage(ctx, message.id);
      return accepted(toRestShape(redelivered));
    },
  },
  {
    method: 'POST',
    path: '/outgoingWebhooks/:webhookId/redeliverFailed',
    handle: async ({ ctx, params, body }) => {
      const since = (fromRestShape(body) as { since?: unknown } | undefined)?.since;
      return accepted({ Count: await redeliverFailedMessages(ctx, params.webhookId!, since) });
    },
  },
  {
    method: 'GET',
    path: '/tables',
    handle: async ({ ctx }) => ok({ Result: await listTables(ctx) }),
  },
  {
    method: 'GET',
    path: '/tables/:table/fields',
    handle: async ({ ctx, params }) => list(await getTableFields(ctx, params.table!)),
  },
];

/** The JSON body of a request, `undefined` when there is none. */
async function readJsonBody(c: Context<HttpEnv>): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') return undefined;
  const contentType = c.req.header('content-type') ?? '';
  if (!isJsonMediaType(contentType)) {
    throw new AppError('UnsupportedMediaType', 'The request body must be JSON (Content-Type: application/json)');
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AppError('IncorrectBodyParameter', `Malformed JSON: ${(error as Error).message}`);
  }
}

export function createRestApi(deps: { db: Db; config: Config; status: StatusPublisher; rateLimiter: ApiRateLimiter }): Hono<HttpEnv> {
  const api = new Hono<HttpEnv>();
  for (const route of REST_ROUTES) {
    api.on(route.method, route.path, async (c) => {
      const principal = await authenticateBearer(deps.db, c.req.header('authorization'));
      await deps.rateLimiter.admit(principal);
      // Every route but a read writes: a caller who may not write gets a 403, not the body's 400 or 415.
      if (route.method !== 'GET') requirePermission(principal, 'webhooks:write');
      const ctx: ServiceContext = { db: deps.db, config: deps.config, log: c.get('log'), principal, status: deps.status };
      const body = route.method === 'GET' || route.method === 'DELETE' ? undefined : await readJsonBody(c);
      const result = await route.handle({ ctx, params: c.req.param(), body });
      return result.status === 204 ? c.body(null, 204) : c.json(result.body as object, result.status);
    });
  }
  return api;
}
