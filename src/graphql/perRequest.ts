import type { GraphQLContext } from './builder';

/**
 * Memoises `load` per request and object, so that sibling fields backed by one query
 * (messages, calls, errors) run it once.
 */
export function perRequest<T extends { id: string }, R>(load: (ctx: GraphQLContext, object: T) => Promise<R>) {
  const cache = new WeakMap<GraphQLContext, Map<string, Promise<R>>>();
  return (ctx: GraphQLContext, object: T): Promise<R> => {
    let byId = cache.get(ctx);
    if (!byId) cache.set(ctx, (byId = new Map()));
    let result = byId.get(object.id);
    if (!result) byId.set(object.id, (result = load(ctx, object)));
    return result;
  };
}
