import { getIntrospectionQuery, parse, validate } from 'graphql';
import { describe, expect, it } from 'vitest';
import { DEFAULT_QUERY_LIMITS, queryLimitsRule } from '../src/graphql/limits';
import { schema } from '../src/graphql/schema';

const check = (query: string, limits = DEFAULT_QUERY_LIMITS) =>
  validate(schema, parse(query), [queryLimitsRule(limits)]).map((error) => error.message);

describe('query limits', () => {
  it("let GraphiQL's introspection query through, as introspection costs nothing", () => {
    expect(check(getIntrospectionQuery())).toEqual([]);
  });

  it('count a full page of messages with all their attempts as about 9,000', () => {
    const fullPage = `{ messages(webhookId: "m", first: 100) { edges { node {
      id webhookId eventId eventType objectName status body eventDate
      attempts { url attempt attemptedAt succeeded httpStatus durationMs error responseBody } } } } }`;
    expect(check(fullPage)).toEqual([]);
    expect(check(fullPage, { ...DEFAULT_QUERY_LIMITS, maxCost: 9000 })).toEqual([expect.stringMatching(/^The operation costs about 9,002 /)]);
  });
});
