import SchemaBuilder from '@pothos/core';
import type { ServiceContext } from '../context';

/** The context of every GraphQL operation: the services' context of the authenticated caller. */
export type GraphQLContext = ServiceContext;

export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  DefaultInputFieldRequiredness: false;
}>({ defaultFieldNullability: false });

builder.queryType({});
builder.mutationType({});
