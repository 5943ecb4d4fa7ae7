import { createYoga } from 'graphql-yoga';
import { authenticateBearer } from '../auth/tokens';
import type { Config } from '../config';
import type { Db } from '../db/database';
import { AppError } from '../errors';
import type { Logger } from '../logger';
import type { GraphQLContext } from './builder';
import { appErrorToGraphQL, createErrorMask, useContractErrorCodes } from './errors';
import { useQueryLimits } from './limits';
import { schema } from './schema';

export interface GraphQLServerContext {
  log: Logger;
}

const GRAPHIQL_DEFAULT_QUERY = `# Set the header below to your token (POST /oauth/token), then run:
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
`;

/** The GraphQL endpoint (queries, mutations, GraphiQL); every operation needs a bearer token. */
export function createGraphQLHandler(deps: { db: Db; config: Config; log: Logger }) {
  return createYoga<GraphQLServerContext, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    logging: false,
    batching: false,
    maskedErrors: { maskError: createErrorMask(deps.log), errorMessage: 'Internal error' },
    graphiql: {
      title: 'Webhook Gateway',
      defaultQuery: GRAPHIQL_DEFAULT_QUERY,
      headers: JSON.stringify({ Authorization: 'Bearer <access_token>' }),
      shouldPersistHeaders: true,
    },
    plugins: [useQueryLimits(), useContractErrorCodes()],
    context: async ({ request, log }) => {
      try {
        const principal = await authenticateBearer(deps.db, request.headers.get('authorization'));
        return { db: deps.db, config: deps.config, log, principal };
      } catch (error) {
        throw error instanceof AppError ? appErrorToGraphQL(error) : error;
      }
    },
  });
}
