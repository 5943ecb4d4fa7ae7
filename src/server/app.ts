import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { requestId } from 'hono/request-id';
import type { ApiRateLimiter } from '../auth/rateLimit';
import { createTokenEndpoint } from '../auth/tokenEndpoint';
import type { Config } from '../config';
import type { Db } from '../db/database';
import type { StatusPublisher } from '../delivery/status';
import { GRAPHIQL_ASSETS_PATH, GRAPHIQL_CONTENT_SECURITY_POLICY, graphiqlAssets } from '../graphql/graphiql';
import type { createGraphQLHandler } from '../graphql/handler';
import type { Logger } from '../logger';
import { renderRestError, restError } from '../rest/errors';
import { createRestApi } from '../rest/routes';
import type { HttpEnv } from './env';
import type { Metrics } from './metrics';

/** Requests larger than this are refused with 413 before they are read. */
export const MAX_REQUEST_BYTES = 1024 * 1024;

export const REST_PREFIXES = ['/v2', '/rest/v2', '/integrations/rest/v3'] as const;

export interface AppDependencies {
  db: Db;
  config: Config;
  log: Logger;
  metrics: Metrics;
  status: StatusPublisher;
  rateLimiter: ApiRateLimiter;
  /** The GraphQL endpoint, in processes that serve the API. */
  graphql?: ReturnType<typeof createGraphQLHandler>;
  /** Each check resolves when its dependency answers and rejects when it does not. */
  readiness: Record<string, () => Promise<unknown>>;
}

const READY_TIMEOUT_MS = 2000;

function withTimeout(check: () => Promise<unknown>): Promise<unknown> {
  return Promise.race([
    check(),
    new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), READY_TIMEOUT_MS).unref()),
  ]);
}

export function createApp(deps: AppDependencies): Hono<HttpEnv> {
  const app = new Hono<HttpEnv>();

  app.use(requestId());
  app.use(async (c, next) => {
    const started = performance.now();
    const log = deps.log.child({ reqId: c.get('requestId') });
    c.set('log', log);
    await next();
    const route = c.req.routePath === '/*' ? 'unmatched' : c.req.routePath;
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.httpRequests.inc({ method: c.req.method, route, status: c.res.status });
    deps.metrics.httpDuration.observe({ method: c.req.method, route }, seconds);
    log.info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(seconds * 1000) }, 'request');
  });
  app.use(
    bodyLimit({
      maxSize: MAX_REQUEST_BYTES,
      onError: (c) => {
        // The rest of the body is never read, so this connection cannot carry another request.
        c.header('Connection', 'close');
        return restError(c, 'PayloadTooLarge', `The request body is larger than ${MAX_REQUEST_BYTES} bytes`);
      },
    }),
  );

  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.get('/ready', async (c) => {
    const names = Object.keys(deps.readiness);
    const results = await Promise.allSettled(names.map((name) => withTimeout(deps.readiness[name]!)));
    const checks = Object.fromEntries(names.map((name, i) => [name, results[i]!.status === 'fulfilled' ? 'up' : 'down']));
    const ready = results.every((result) => result.status === 'fulfilled');
    return c.json({ status: ready ? 'ready' : 'unavailable', checks }, ready ? 200 : 503);
  });
  app.get('/metrics', async (c) =>
    c.body(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType }),
  );

  const { graphql } = deps;
  if (graphql) {
    app.on(['GET', 'POST', 'OPTIONS'], '/graphql', async (c) => {
      const response = await graphql.fetch(c.req.raw, { log: c.get('log') });
      // Yoga answers a body it cannot read with an empty 415; GraphQL callers get the contract's error.
      if (response.status === 415) {
        const message = 'The request body must be JSON (Content-Type: application/json)';
        return c.json({ errors: [{ message, extensions: { code: 'UnsupportedMediaType' } }] }, 415);
      }
      // A Response returned as it is does not get the headers set on the context, as c.json's do.
      response.headers.set('X-Request-Id', c.get('requestId'));
      if (response.headers.get('content-type')?.startsWith('text/html')) {
        response.headers.set('Content-Security-Policy', GRAPHIQL_CONTENT_SECURITY_POLICY);
      }
      return response;
    });
    app.get(`${GRAPHIQL_ASSETS_PATH}/:file`, async (c) => {
      const asset = (await graphiqlAssets()).files.get(c.req.param('file'));
      if (!asset) return c.notFound();
      return c.body(typeof asset.body === 'string' ? asset.body : new Uint8Array(asset.body), 200, {
        'Content-Type': asset.contentType,
        'Cache-Control': 'public, max-age=31536000, immutable',
        'X-Content-Type-Options': 'nosniff',
      });
    });
    app.post('/oauth/token', createTokenEndpoint(deps.db));
    const rest = createRestApi(deps);
    for (const prefix of REST_PREFIXES) app.route(prefix, rest);
  }

  app.notFound((c) => restError(c, 'ObjectNotFound', `No route ${c.req.method} ${c.req.path}`));
  app.onError((error, c) => renderRestError(c, error));
  return app;
}
