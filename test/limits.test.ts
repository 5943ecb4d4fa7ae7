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

  it('count fragments that spread the next one twice without expanding them at every spread', () => {
    // Expanded afresh at every spread, 26 levels take a minute or more (time doubles per level), so a
    // regression fails on the test timeout; far more levels would hang the run instead.
    const levels = 26;
    const fragments = Array.from({ length: levels }, (_, i) => `fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }`);
    const query = `{ ...F0 } ${fragments.join(' ')} fragment F${levels} on Query { __typename }`;
    expect(check(query)).toEqual([`The operation selects ${2 ** levels} fields (at most 1000)`]);
  });

  it('count a fragment by the page size of each place it is spread', () => {
    const inline = `{ a: messages(webhookId: "m", first: 100) { edges { node { id } } } b: messages(webhookId: "m", first: 1) { edges { node { id } } } }`;
    const spread = `{ a: messages(webhookId: "m", first: 100) { ...Page } b: messages(webhookId: "m", first: 1) { ...Page } }
      fragment Page on MessageConnection { edges { node { id } } }`;
    const noCost = { ...DEFAULT_QUERY_LIMITS, maxCost: 0 };
    expect(check(spread, noCost)).toEqual([expect.stringMatching(/^The operation costs about 206 /)]);
    expect(check(spread, noCost)).toEqual(check(inline, noCost));
  });
});
