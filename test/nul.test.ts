import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';
import { StatusWatcher } from './support/live';
import { waitFor } from './support/wait';

// Postgres text cannot hold U+0000: a client's string with one must be refused, never reach a query (a 500).
const NUL = '\u0000';

let gw: TestGateway;
let token: string;
let app: postgres.Sql;
let webhookId: string;
let eventId: string;

beforeAll(async () => {
  gw = await startTestGateway({ BOOTSTRAP_CLIENT_ID: 'review-admin', BOOTSTRAP_CLIENT_SECRET: 'review-secret-0123456789' });
  token = await gw.token();
  app = postgres(gw.databaseUrl, { max: 1, onnotice: () => {} });
  await app`create table "NulCustomers" ("PK_ID" serial primary key, "Name" text)`;
  const webhook = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: { Name: 'nul', OutgoingUrls: ['https://hooks.example.com/nul'] } });
  webhookId = webhook.body.Id;
  const event = await gw.request('POST', `/v2/outgoingWebhooks/${webhookId}/events`, {
    token,
    body: { EventType: 'table.recordInsert', ObjectName: 'NulCustomers' },
  });
  eventId = event.body.Id;
});

afterAll(async () => {
  await app?.end();
  await gw?.stop();
});

function expectBadField(response: { status: number; body: any }, field: string) {
  expect(response.status).toBe(400);
  expect(response.body).toMatchObject({ Code: 'IncorrectBodyParameter', Message: `${field}: must not contain the NUL character (U+0000)` });
}

describe('a NUL character in a REST body field is a 400 naming the field', () => {
  it.each(['/v2', '/integrations/rest/v3'])('of a webhook, created and updated, under %s', async (prefix) => {
    const body = { Name: `nul-body${prefix.replaceAll('/', '-')}`, OutgoingUrls: [`https://hooks.example.com/nul-body${prefix}`] };
    for (const [field, bad] of [
      ['Name', { Name: `a${NUL}b` }],
      ['Description', { Description: `line${NUL}` }],
      ['OutgoingUrls[0]', { OutgoingUrls: [`https://hooks.example.com/${NUL}`] }],
    ] as const) {
      expectBadField(await gw.request('POST', `${prefix}/outgoingWebhooks`, { token, body: { ...body, ...bad } }), field);
      expectBadField(await gw.request('PUT', `${prefix}/outgoingWebhooks/${webhookId}`, { token, body: bad }), field);
    }
  });

  it('of an event, created and updated', async () => {
    const event = { EventType: 'table.recordUpdate', ObjectName: 'NulCustomers' };
    for (const [field, bad] of [
      ['ObjectName', { ObjectName: `NulCustomers${NUL}` }],
      ['CustomPayloadTemplate', { CustomPayloadTemplate: `{'a': '${NUL}'}` }],
      ['ObjectFields[0]', { ObjectFields: [`Name${NUL}`] }],
    ] as const) {
      expectBadField(await gw.request('POST', `/v2/outgoingWebhooks/${webhookId}/events`, { token, body: { ...event, ...bad } }), field);
      expectBadField(await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}/events/${eventId}`, { token, body: bad }), field);
    }
  });
});

describe('a NUL character in an id or a table name names nothing: 404, as an unknown one', () => {
  it('in a REST path', async () => {
    for (const [method, path] of [
      ['GET', '/v2/outgoingWebhooks/%00'],
      ['PUT', '/v2/outgoingWebhooks/%00'],
      ['DELETE', '/v2/outgoingWebhooks/%00'],
      ['PATCH', '/v2/outgoingWebhooks/%00/regenerateSecret'],
      ['GET', '/v2/outgoingWebhooks/%00/events'],
      ['POST', '/v2/outgoingWebhooks/%00/events'],
      ['GET', '/integrations/rest/v3/outgoingWebhooks/%00/events'],
      ['GET', `/v2/outgoingWebhooks/${webhookId}/events/%00`],
      ['PUT', `/v2/outgoingWebhooks/${webhookId}/events/%00`],
      ['DELETE', `/v2/outgoingWebhooks/${webhookId}/events/%00`],
      ['POST', '/v2/outgoingWebhooks/%00/redeliverFailed'],
      ['POST', `/v2/outgoingWebhooks/${webhookId}/messages/%00/redeliver`],
      ['GET', '/v2/tables/%00/fields'],
      ['GET', '/v2/tables/NulCustomers%00/fields'],
    ] as const) {
      const body = { PUT: { Enabled: true }, POST: { EventType: 'table.recordInsert', ObjectName: 'NulCustomers', Since: '2026-01-01' } }[method as string];
      const response = await gw.request(method, path, { token, body });
      expect(response.status, `${method} ${path}`).toBe(404);
      expect(response.body).toMatchObject({ Code: 'ObjectNotFound' });
    }
  });

  it('over GraphQL', async () => {
    for (const [query, variables] of [
      ['query($id: ID!) { outgoingWebhook(id: $id) { id } }', { id: NUL }],
      ['query($id: ID!) { webhookEvents(webhookId: $id) { id } }', { id: `${webhookId}${NUL}` }],
      ['query($webhookId: ID!, $id: ID!) { webhookEvent(webhookId: $webhookId, id: $id) { id } }', { webhookId, id: NUL }],
      ['query($table: String!) { tableFields(table: $table) { name } }', { table: NUL }],
      ['mutation($id: ID!) { regenerateWebhookSecret(id: $id) { id } }', { id: NUL }],
      ['mutation($id: ID!) { deleteOutgoingWebhook(id: $id) }', { id: NUL }],
      ['mutation($webhookId: ID!, $id: ID!) { deleteWebhookEvent(webhookId: $webhookId, id: $id) }', { webhookId, id: NUL }],
      ['mutation($id: ID!) { redeliverFailedMessages(webhookId: $id, since: "2026-01-01") }', { id: NUL }],
    ] as const) {
      const response = await gw.graphql(query, variables, token);
      expect(response.body.errors?.[0]?.extensions, query).toEqual({ code: 'ObjectNotFound' });
    }
    const messages = await gw.graphql('query($id: ID!) { messages(webhookId: $id) { edges { cursor } } }', { id: NUL }, token);
    expect(messages.body.errors?.[0]?.extensions).toEqual({ code: 'ObjectNotFound' });
  });
});

describe('a NUL character over GraphQL', () => {
  it('in an input field is a 400 naming it, written inline or as a variable', async () => {
    const inline = await gw.graphql(
      'mutation { createOutgoingWebhook(input: {name: "a\\u0000b", outgoingUrls: ["https://hooks.example.com/nul-gql"]}) { id } }',
      {},
      token,
    );
    const asVariable = await gw.graphql(
      'mutation($webhookId: ID!, $input: CreateWebhookEventInput!) { createWebhookEvent(webhookId: $webhookId, input: $input) { id } }',
      { webhookId, input: { eventType: 'table.recordDelete', objectName: `NulCustomers${NUL}` } },
      token,
    );
    expect(inline.body.errors[0]).toMatchObject({
      message: 'name: must not contain the NUL character (U+0000)',
      extensions: { code: 'IncorrectBodyParameter', field: 'name' },
    });
    expect(asVariable.body.errors[0].extensions).toEqual({ code: 'IncorrectBodyParameter', field: 'objectName' });
  });

  it('in a subscription argument over the WebSocket is ObjectNotFound', async () => {
    const watcher = new StatusWatcher(gw.url, { Authorization: `Bearer ${token}` }, { webhookId: NUL });
    try {
      const [error] = await waitFor(async () => (watcher.errors.length > 0 ? watcher.errors : undefined));
      expect(error).toMatchObject({ extensions: { code: 'ObjectNotFound' } });
    } finally {
      await watcher.dispose();
    }
  });
});

describe('a NUL character in a token request', () => {
  const form = (fields: Record<string, string>) => ({
    body: new URLSearchParams(fields).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });

  it('in client_id is an unknown client: 401 invalid_client, from a form, JSON or HTTP Basic', async () => {
    const fields = { grant_type: 'client_credentials', client_id: `review${NUL}admin`, client_secret: 'review-secret-0123456789' };
    const basic = Buffer.from(`review%00admin:${fields.client_secret}`).toString('base64');
    for (const response of [
      await gw.request('POST', '/oauth/token', form(fields)),
      await gw.request('POST', '/oauth/token', { body: fields }),
      await gw.request('POST', '/oauth/token', { ...form({ grant_type: 'client_credentials' }), headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' } }),
    ]) {
      expect(response.status).toBe(401);
      expect(response.body).toEqual({ error: 'invalid_client', error_description: 'Client authentication failed' });
    }
    // The same client without the NUL is granted.
    expect((await gw.request('POST', '/oauth/token', form({ ...fields, client_id: 'review-admin' }))).status).toBe(200);

    // A secret or a refresh token with a NUL is a wrong one (only their hashes meet Postgres).
    const wrongSecret = await gw.request('POST', '/oauth/token', form({ grant_type: 'client_credentials', client_id: 'review-admin', client_secret: `x${NUL}` }));
    expect(wrongSecret.status).toBe(401);
    const refresh = await gw.request('POST', '/oauth/token', form({ grant_type: 'refresh_token', refresh_token: `x${NUL}` }));
    expect(refresh.status).toBe(400);
    expect(refresh.body.error).toBe('invalid_grant');
  });
});
