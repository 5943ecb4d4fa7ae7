/** Stable error codes shared by every edge (CONTRACT §9). */
export const ERROR_STATUS = {
  IncorrectBodyParameter: 400,
  IncorrectQueryParameter: 400,
  Unauthorized: 401,
  UnsufficientPrivileges: 403,
  ObjectNotFound: 404,
  PayloadTooLarge: 413,
  UnsupportedMediaType: 415,
  TooManyRequests: 429,
  InternalError: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/**
 * An error a caller can act on. `field` is the camelCase path of the offending input
 * (`outgoingUrls.1`); each edge names it in its own spelling.
 */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'AppError';
  }
}

/** TooManyRequests, with when the caller may try again (the `Retry-After` header). */
export class RateLimitedError extends AppError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('TooManyRequests', message);
  }
}

export const badInput = (field: string, message: string) => new AppError('IncorrectBodyParameter', message, field);

export const notFound = (what: string, id: string) => new AppError('ObjectNotFound', `${what} '${id}' was not found`);
