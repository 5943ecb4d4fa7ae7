import { createYoga } from 'graphql-yoga';
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
  /** Set by the WebSocket transport, which authenticates once per connection. */
  principal?: Principal;
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
    plugins: [useQueryLimits(), useContractErrorCodes()],
    context: async ({ request, log, principal }) => {
      const services = { db: deps.db, config: deps.config, log, status: deps.status, statusFeed: deps.statusFeed };
      if (principal) return { ...services, principal };
      try {
        const authorization = request.headers.get('authorization');
        const authenticated = await authenticateBearer(deps.db, authorization);
        await deps.rateLimiter.admit(authenticated);
        return { ...services, principal: authenticated, recheckAccess: () => authenticateBearer(deps.db, authorization) };
      } catch (error) {
        throw error instanceof AppError ? appErrorToGraphQL(error) : error;
      }
    },
  });
}
