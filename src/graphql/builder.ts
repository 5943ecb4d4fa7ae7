import SchemaBuilder from '@pothos/core';
import type { ServiceContext } from '../context';
import type { StatusFeed } from '../delivery/feed';

/** The context of every GraphQL operation: the services' context of the authenticated caller, and the live status feed. */
export interface GraphQLContext extends ServiceContext {
  statusFeed: StatusFeed;
  /** Over HTTP: authenticates the request's token again (long-lived streams check it as they go). */
  recheckAccess?: () => Promise<unknown>;
}

export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  DefaultInputFieldRequiredness: false;
}>({ defaultFieldNullability: false });

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});
