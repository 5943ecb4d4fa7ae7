import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { AppError, ERROR_STATUS, RateLimitedError } from '../errors';
import type { Logger } from '../logger';

/** `outgoingUrls.1` → `outgoingUrls[1]` */
export const graphqlFieldName = (path: string) => path.replace(/\.(\d+)/g, '[$1]');

export function appErrorToGraphQL(error: AppError, at?: GraphQLError): GraphQLError {
  const message = error.field ? `${graphqlFieldName(error.field)}: ${error.message}` : error.message;
  return new GraphQLError(message, {
    nodes: at?.nodes,
    source: at?.source,
    positions: at?.positions,
    path: at?.path,
    extensions: {
      code: error.code,
      ...(error.field ? { field: graphqlFieldName(error.field) } : {}),
      ...(error.code === 'Unauthorized'
        ? { http: { status: ERROR_STATUS.Unauthorized, headers: { 'WWW-Authenticate': 'Bearer' } } }
        : {}),
      ...(error instanceof RateLimitedError
        ? { http: { status: ERROR_STATUS.TooManyRequests, headers: { 'Retry-After': String(error.retryAfterSeconds) } } }
        : {}),
    },
  });
}

// Duck-typed as yoga does: graphql can be loaded twice (its ESM and CommonJS builds), and an
// error from the other copy fails `instanceof`.
const isGraphQLError = (error: unknown): error is GraphQLError =>
  error instanceof Error && error.name === 'GraphQLError';

/** yoga's error mask: errors with a stable code keep their message; anything unexpected is logged and hidden. */
export function createErrorMask(log: Logger) {
  return (error: unknown): Error => {
    const located = isGraphQLError(error) ? error : undefined;
    const original = located ? located.originalError : error;
    if (original instanceof AppError) return appErrorToGraphQL(original, located);
    if (located && (!original || isGraphQLError(original))) return located;
    log.error({ err: original, path: located?.path }, 'unexpected error in a GraphQL operation');
    return new GraphQLError('Internal error', { path: located?.path, extensions: { code: 'InternalError' } });
  };
}

/**
 * GraphQL's own parse, validation and variable errors are bad input: they get
 * `IncorrectBodyParameter`, so that every error has one of the contract's codes.
 */
export function withContractCodes<T extends readonly GraphQLError[]>(errors: T): T {
  for (const error of errors) {
    if (!((error.extensions?.code as string) in ERROR_STATUS)) {
      (error.extensions as Record<string, unknown>).code = 'IncorrectBodyParameter';
    }
  }
  return errors;
}

/** Applies withContractCodes to every result yoga sends over HTTP. */
export function useContractErrorCodes(): Plugin {
  return {
    onResultProcess({ result }) {
      for (const single of Array.isArray(result) ? result : [result]) {
        if (single && !(Symbol.asyncIterator in single) && single.errors) withContractCodes(single.errors);
      }
    },
  };
}
