import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { AppError, ERROR_STATUS, RateLimitedError, type ErrorCode } from '../errors';
import type { HttpEnv } from '../server/env';
import { restFieldName } from './shape';

/** Caspio's error body: `{"Code","Message","Resource","RequestId"}`, with the matching status. */
export function restError(c: Context<HttpEnv>, code: ErrorCode, message: string): Response {
  const body = { Code: code, Message: message, Resource: c.req.path, RequestId: c.get('requestId') };
  if (code === 'Unauthorized') c.header('WWW-Authenticate', 'Bearer');
  return c.json(body, ERROR_STATUS[code] as ContentfulStatusCode);
}

/** The one place where an error becomes a REST response; unexpected errors are logged, never shown. */
export function renderRestError(c: Context<HttpEnv>, error: unknown): Response {
  if (error instanceof AppError) {
    const message = error.field ? `${restFieldName(error.field)}: ${error.message}` : error.message;
    if (error instanceof RateLimitedError) c.header('Retry-After', String(error.retryAfterSeconds));
    return restError(c, error.code, message);
  }
  c.get('log').error({ err: error }, 'unexpected error');
  return restError(c, 'InternalError', 'An internal error occurred');
}
