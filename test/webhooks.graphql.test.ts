import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';

let gw: TestGateway;
let token: string;
let readOnlyToken: string;

const WEBHOOK_FIELDS = `id name description outgoingUrls callThrottling enabled defaultPayloadIncludesSecret secret
  dateCreated createdBy lastModified modifiedBy`;

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token();
  readOnlyToken = await gw.token({ readOnly: true, name: 'Reader', email: 'reader@acme.com' });
});

afterAll(() => gw?.stop());

/** GraphQL's answer under CONTRACT §3's REST names, spelled out, to compare the two edges field by field. */
const asRest = (webhook: Record<string, unknown>) => ({
  Id: webhook.id,
  Name: webhook.name,
  Description: webhook.description,
  OutgoingUrls: webhook.outgoingUrls,
  CallThrottling: webhook.callThrottling,
  Enabled: webhook.enabled,
  DefaultPayloadIncludesSecret: webhook.defaultPayloadIncludesSecret,
  Secret: webhook.secret,
  DateCreated: webhook.dateCreated,
  CreatedBy: webhook.createdBy,
  LastModified: webhook.lastModified,
  ModifiedBy: webhook.modifiedBy,
});

describe('GraphQL and REST give the same results', () => {
  it('for create, get, list, update, regenerate and delete', async () => {
    const created = await gw.graphql(
      `mutation($input: CreateOutgoingWebhookInput!) { createOutgoingWebhook(input: $input) { ${WEBHOOK_FIELDS} } }`,
      { input: { name: 'GraphQLHook', outgoingUrls: ['https://gql.example.com/a', 'https://gql.example.com/b'], callThrottling: 8 } },
      token,
    );
    expect(created.status).toBe(200);
    expect(created.body.errors).toBeUndefined();
    const webhook = created.body.data.createOutgoingWebhook;
    expect(webhook).toMatchObject({ name: 'GraphQLHook', callThrottling: 8, enabled: true, createdBy: 'John Doe (john.doe@acme.com)' });

    const viaRest = await gw.request('GET', `/v2/outgoingWebhooks/${webhook.id}`, { token });
    expect(viaRest.body).toMatchObject(asRest(webhook));

    const viaGraphQL = await gw.graphql(`query($id: ID!) { outgoingWebhook(id: $id) { ${WEBHOOK_FIELDS} } }`, { id: webhook.id }, token);
    expect(viaGraphQL.body.data.outgoingWebhook).toEqual(webhook);

    const list = await gw.graphql(`{ outgoingWebhooks { ${WEBHOOK_FIELDS} } }`, {}, token);
    const restList = await gw.request('GET', '/v2/outgoingWebhooks', { token });
    expect(restList.body.Result).toEqual(list.body.data.outgoingWebhooks.map(asRest));

    const updated = await gw.graphql(
      `mutation($id: ID!, $input: UpdateOutgoingWebhookInput!) { updateOutgoingWebhook(id: $id, input: $input) { ${WEBHOOK_FIELDS} } }`,
      { id: webhook.id, input: { description: 'changed over GraphQL', enabled: false } },
      token,
    );
    const updatedHook = updated.body.data.updateOutgoingWebhook;
    expect(updatedHook).toMatchObject({ description: 'changed over GraphQL', enabled: false, name: 'GraphQLHook' });
    expect((await gw.request('GET', `/v2/outgoingWebhooks/${webhook.id}`, { token })).body).toMatchObject(asRest(updatedHook));

    const rotated = await gw.graphql(`mutation($id: ID!) { regenerateWebhookSecret(id: $id) { secret } }`, { id: webhook.id }, token);
    expect(rotated.body.data.regenerateWebhookSecret.secret).not.toBe(webhook.secret);
    expect((await gw.request('GET', `/v2/outgoingWebhooks/${webhook.id}`, { token })).body.Secret).toBe(
      rotated.body.data.regenerateWebhookSecret.secret,
    );

    const deleted = await gw.graphql(`mutation($id: ID!) { deleteOutgoingWebhook(id: $id) }`, { id: webhook.id }, token);
    expect(deleted.body.data.deleteOutgoingWebhook).toBe(true);
    expect((await gw.request('GET', `/v2/outgoingWebhooks/${webhook.id}`, { token })).status).toBe(404);
  });

  it('for the same bad input, with the same error code', async () => {
    const input = { name: 'bad', outgoingUrls: ['http://insecure.example.com/'] };
    const viaGraphQL = await gw.graphql(
      `mutation($input: CreateOutgoingWebhookInput!) { createOutgoingWebhook(input: $input) { id } }`,
      { input },
      token,
    );
    const viaRest = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: { Name: 'bad', OutgoingUrls: input.outgoingUrls } });
    expect(viaRest.body.Code).toBe('IncorrectBodyParameter');
    expect(viaGraphQL.body.errors[0].extensions).toEqual({ code: 'IncorrectBodyParameter', field: 'outgoingUrls[0]' });
    expect(viaGraphQL.body.errors[0].message).toBe(viaRest.body.Message.replace('OutgoingUrls', 'outgoingUrls'));
  });

  it('for an unknown id', async () => {
    const response = await gw.graphql(`{ outgoingWebhook(id: "zzzzzz") { id } }`, {}, token);
    expect(response.body.errors[0].extensions.code).toBe('ObjectNotFound');
  });
});

describe('GraphQL security', () => {
  it('refuses an operation without a token with 401 and code Unauthorized', async () => {
    const response = await gw.graphql(`{ outgoingWebhooks { id } }`);
    expect(response.status).toBe(401);
    expect(response.body.errors[0].extensions.code).toBe('Unauthorized');
    expect(response.body.data).toBeUndefined();
  });

  it('refuses a request without a valid token before parsing or validating its document', async () => {
    const noToken = (await gw.graphql(`{ outgoingWebhooks { id } }`)).body;
    const badToken = (await gw.graphql(`{ outgoingWebhooks { id } }`, {}, 'not-a-token')).body;
    // Validating first would answer "Cannot query field … Did you mean "secret"?", mapping the schema for anyone.
    for (const [query, bearer, expected] of [
      ['{ outgoingWebhooks { secrett } }', undefined, noToken],
      ['{ outgoingWebhooks { id ', undefined, noToken],
      ['{ outgoingWebhooks { secrett } }', 'not-a-token', badToken],
    ] as const) {
      const response = await gw.graphql(query, {}, bearer);
      expect(response.status, query).toBe(401);
      expect(response.body, query).toEqual(expected);
    }
    expect(badToken.errors[0].extensions.code).toBe('Unauthorized');
  });

  it('answers with x-request-id as REST does, and a 401 with WWW-Authenticate: Bearer', async () => {
    const answered = await gw.graphql(`{ outgoingWebhooks { id } }`, {}, token);
    expect(answered.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const refused = await gw.graphql(`{ outgoingWebhooks { id } }`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer');
    expect(refused.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(refused.headers.get('x-request-id')).not.toBe(answered.headers.get('x-request-id'));
    const page = await gw.request('GET', '/graphql', { headers: { accept: 'text/html' } });
    expect(page.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers a body that is not JSON with 415 UnsupportedMediaType in the GraphQL error shape', async () => {
    const response = await gw.request('POST', '/graphql', {
      token,
      body: JSON.stringify({ query: '{ tables }' }),
      headers: { 'content-type': 'text/plain' },
    });
    expect(response.status).toBe(415);
    expect(response.body.errors[0].extensions.code).toBe('UnsupportedMediaType');
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('lets a read-only profile read, without secrets, and not write', async () => {
    await gw.graphql(
      `mutation { createOutgoingWebhook(input: {name: "ro-visible", outgoingUrls: ["https://ro.example.com/"]}) { id } }`,
      {},
      token,
    );
    const read = await gw.graphql(`{ outgoingWebhooks { name secret } }`, {}, readOnlyToken);
    expect(read.body.data.outgoingWebhooks).toContainEqual({ name: 'ro-visible', secret: null });
    const write = await gw.graphql(
      `mutation { createOutgoingWebhook(input: {name: "ro", outgoingUrls: ["https://ro.example.com/x"]}) { id } }`,
      {},
      readOnlyToken,
    );
    expect(write.body.errors[0].extensions.code).toBe('UnsufficientPrivileges');
  });

  it('refuses queries nested too deep or too wide before running them', async () => {
    const nested = `{ __type(name: "Query") { ${'ofType { '.repeat(20)}name${' }'.repeat(20)} } }`;
    const tooDeep = await gw.graphql(nested, {}, token);
    expect(tooDeep.body.errors[0].message).toMatch(/levels deep/);
    expect(tooDeep.body.errors[0].extensions.code).toBe('IncorrectBodyParameter');

    const aliases = Array.from({ length: 40 }, (_, i) => `a${i}: outgoingWebhooks { id }`).join(' ');
    const tooWide = await gw.graphql(`{ ${aliases} }`, {}, token);
    expect(tooWide.body.errors[0].message).toMatch(/aliases/);
    expect(tooWide.body.data).toBeUndefined();
  });

  it('refuses operations that would read too many messages, counting each list by its page size', async () => {
    const created = await gw.graphql(
      `mutation { createOutgoingWebhook(input: {name: "CostlyHook", outgoingUrls: ["https://cost.example.com/"]}) { id } }`,
      {},
      token,
    );
    const id = created.body.data.createOutgoingWebhook.id;
    const page = (first: string) => `messages(webhookId: $id, first: ${first}) { edges { node { id body attempts { url responseBody } } } }`;

    const pages = Array.from({ length: 30 }, (_, i) => `p${i}: ${page('100')}`).join(' ');
    const tooCostly = await gw.graphql(`query($id: ID!) { ${pages} }`, { id }, token);
    expect(tooCostly.body.errors[0].message).toMatch(/costs/);
    expect(tooCostly.body.errors[0].extensions.code).toBe('IncorrectBodyParameter');
    expect(tooCostly.body.data).toBeUndefined();

    const onePage = await gw.graphql(`query($id: ID!) { ${page('100')} }`, { id }, token);
    expect(onePage.body.errors).toBeUndefined();
    expect(onePage.body.data.messages.edges).toEqual([]);

    // Without a default, $first is counted as the largest page.
    const variablePage = await gw.graphql(`query($id: ID!, $first: Int) { ${page('$first')} }`, { id, first: 100 }, token);
    expect(variablePage.body.errors).toBeUndefined();
    expect(variablePage.body.data.messages.edges).toEqual([]);
  });

  it('answers GraphQL syntax errors with IncorrectBodyParameter', async () => {
    const response = await gw.graphql(`{ outgoingWebhooks { id `, {}, token);
    expect(response.body.errors[0].extensions.code).toBe('IncorrectBodyParameter');
  });

  it('still serves introspection, as GraphiQL needs it', async () => {
    const { getIntrospectionQuery } = await import('graphql');
    const response = await gw.graphql(getIntrospectionQuery(), {}, token);
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.__schema.queryType.name).toBe('Query');
  });

  it('serves GraphiQL to a browser without a token', async () => {
    const response = await gw.request('GET', '/graphql', { headers: { accept: 'text/html' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/html/);
    expect(String(response.body)).toMatch(/GraphiQL|graphiql/);
  });
});
