import { createYoga, type Plugin } from 'graphql-yoga';
import type { Principal } from '../auth/principal';
import type { ApiRateLimiter } from '../auth/rateLimit';
import { authenticateBearer } from '../auth/tokens';
import type { Config } from '../config';
import type { Db } from '../db/database';
import type { StatusFeed } from '../delivery/feed';
import type { StatusPublisher } from '../delivery/status';
import { AppError } from '../errors';
import type { Logger } from '../logger';
import type { GraphQLContext } from './builder';
import { renderGatewayGraphiQL } from './graphiql';
import { appErrorToGraphQL, createErrorMask, useContractErrorCodes } from './errors';
import { useQueryLimits } from './limits';
import { schema } from './schema';

export interface GraphQLServerContext {
  log: Logger;
  /** The caller: set before parsing over HTTP (useAuthenticationFirst), once per connection over WebSocket. */
  principal?: Principal;
  /** Over HTTP: authenticates the request's token again (long-lived streams check it as they go). */
  recheckAccess?: () => Promise<unknown>;
}

export interface GraphQLDependencies {
  db: Db;
  config: Config;
  log: Logger;
  status: StatusPublisher;
  statusFeed: StatusFeed;
  rateLimiter: ApiRateLimiter;
}

const GRAPHIQL_DEFAULT_QUERY = `# Set the header below to your token (POST /oauth/token), then run an operation.
#   {"Authorization": "Bearer <access_token>"}
query Webhooks {
  outgoingWebhooks {
    id
    name
    outgoingUrls
    callThrottling
    enabled
  }
}

# Live: every delivery's status as it changes (add webhookId / messageId to narrow it).
subscription LiveDeliveries {
  deliveryStatus {
    messageId
    url
    attempt
    status
    httpStatus
    error
    nextAttemptAt
    at
  }
}
`;

/**
 * Authenticates an HTTP request, and counts it against the rate limit, before its body is read:
 * without a valid token nothing is parsed or validated, which would cost CPU and, through
 * validation's suggestions ("Did you mean …?"), map the schema. GraphiQL's page and CORS
 * preflights are answered before this hook runs, so they need no token.
 */
function useAuthenticationFirst(deps: GraphQLDependencies): Plugin<Record<string, unknown>, GraphQLServerContext> {
  return {
    async onRequestParse({ request, serverContext }) {
      const authorization = request.headers.get('authorization');
      try {
        const principal = await authenticateBearer(deps.db, authorization);
        await deps.rateLimiter.admit(principal);
        serverContext.principal = principal;
        serverContext.recheckAccess = () => authenticateBearer(deps.db, authorization);
      } catch (error) {
        throw error instanceof AppError ? appErrorToGraphQL(error) : error;
      }
    },
  };
}

/** The GraphQL endpoint (queries, mutations, subscriptions, GraphiQL); every operation needs a bearer token. */
export function createGraphQLHandler(deps: GraphQLDependencies) {
  return createYoga<GraphQLServerContext, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    logging: false,
    batching: false,
    maskedErrors: { maskError: createErrorMask(deps.log), errorMessage: 'Internal error' },
    renderGraphiQL: renderGatewayGraphiQL,
    graphiql: {
      title: 'Webhook Gateway',
      defaultQuery: GRAPHIQL_DEFAULT_QUERY,
      headers: JSON.stringify({ Authorization: 'Bearer <access_token>' }),
      shouldPersistHeaders: true,
      subscriptionsProtocol: 'WS',
    },
    plugins: [useAuthenticationFirst(deps), useQueryLimits(), useContractErrorCodes()],
    context: ({ log, principal, recheckAccess }) => {
      if (!principal) throw new Error('a GraphQL operation reached its context without an authenticated caller');
      return { db: deps.db, config: deps.config, log, status: deps.status, statusFeed: deps.statusFeed, principal, recheckAccess };
    },
  });
}
