import postgres from 'postgres';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { syncCaptureTriggers } from '../src/capture/triggers';
import { startTestGateway, type TestGateway } from './support/gateway';
import { waitFor } from './support/wait';

let gw: TestGateway;
let token: string;
let readOnlyToken: string;
/** The user's application: plain SQL on the watched tables. */
let app: postgres.Sql;
let counter = 0;

beforeAll(async () => {
  gw = await startTestGateway({ ACCOUNT_ID: 'acct-42' });
  token = await gw.token();
  readOnlyToken = await gw.token({ readOnly: true, name: 'Reader', email: 'reader@acme.com' });
  app = postgres(gw.databaseUrl, { max: 2, onnotice: () => {} });
});

afterAll(async () => {
  await app?.end();
  await gw?.stop();
});

/** A table and a webhook of the test's own. */
async function setup() {
  counter++;
  const table = `Customers${counter}`;
  await app.unsafe(`create table "${table}" (
    "PK_ID" serial primary key, "Name" text, "Email" varchar(100), "Age" integer, "Balance" numeric(10,2),
    "Active" boolean, "Joined" timestamptz, "Photo" bytea, "Tags" text[])`);
  const webhook = await gw.request('POST', '/v2/outgoingWebhooks', {
    token,
    body: { Name: `events-${counter}`, OutgoingUrls: [`https://hooks.example.com/events/${counter}`] },
  });
  return { table, webhookId: webhook.body.Id as string };
}

async function createEvent(webhookId: string, body: Record<string, unknown>) {
  return gw.request('POST', `/v2/outgoingWebhooks/${webhookId}/events`, { token, body });
}

async function messagesOf(webhookId: string): Promise<any[]> {
  const response = await gw.graphql(
    `query($id: ID!) { messages(webhookId: $id, first: 100) { edges { node { id eventId eventType objectName status body } } } }`,
    { id: webhookId },
    token,
  );
  return response.body.data.messages.edges.map((edge: any) => ({ ...edge.node, body: JSON.parse(edge.node.body) })).reverse();
}

async function waitForMessages(webhookId: string, count: number) {
  return waitFor(async () => {
    const list = await messagesOf(webhookId);
    return list.length >= count ? list : undefined;
  }, 10_000, `${count} messages`);
}

/** Waits until the outbox is empty, so that "no message" is a real answer. */
async function outboxDrained() {
  await waitFor(async () => {
    const [row] = await app`select count(*)::int as n from webhook_gateway.outbox`;
    return row!.n === 0 ? true : undefined;
  });
}

async function triggersOn(table: string): Promise<string[]> {
  const rows = await app`select tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid
    where c.relname = ${table} and not t.tgisinternal order by tgname`;
  return rows.map((row) => row.tgname);
}

describe('tables', () => {
  it('lists the watched schema, not the gateway tables', async () => {
    const { table } = await setup();
    const response = await gw.request('GET', '/v2/tables', { token: readOnlyToken });
    expect(response.status).toBe(200);
    expect(response.body.Result).toContain(table);
    expect(response.body.Result).not.toContain('webhooks');
    expect(response.body.Result).not.toContain('outbox');
  });

  it('describes fields with Caspio type names', async () => {
    const { table } = await setup();
    const response = await gw.request('GET', `/integrations/rest/v3/tables/${table}/fields`, { token });
    expect(response.status).toBe(200);
    expect(response.body.Result.map((field: any) => [field.Name, field.Type, field.Unique])).toEqual([
      ['PK_ID', 'AUTONUMBER', true],
      ['Name', 'TEXT', false],
      ['Email', 'STRING', false],
      ['Age', 'INTEGER', false],
      ['Balance', 'NUMBER', false],
      ['Active', 'YES/NO', false],
      ['Joined', 'DATE/TIME', false],
      ['Photo', 'FILE', false],
      ['Tags', 'LIST-STRING', false],
    ]);
    expect(response.body.Result[0]).toMatchObject({ Description: '', DisplayOrder: 1 });
  });

  it('answers an unknown table with 404, also over GraphQL', async () => {
    const response = await gw.request('GET', '/v2/tables/NoSuchTable/fields', { token });
    expect(response.status).toBe(404);
    expect(response.body.Code).toBe('ObjectNotFound');
    const graphql = await gw.graphql(`{ tableFields(table: "NoSuchTable") { name } }`, {}, token);
    expect(graphql.body.errors[0].extensions.code).toBe('ObjectNotFound');
  });

  it('does not take a name longer than an identifier for the table it would be cut to', async () => {
    const longest = 'T'.repeat(63); // Postgres keeps at most 63 bytes of a name
    await app.unsafe(`create table "${longest}" (id int)`);
    expect((await gw.request('GET', `/v2/tables/${longest}/fields`, { token })).status).toBe(200);
    const response = await gw.request('GET', `/v2/tables/${longest}Extra/fields`, { token });
    expect(response.status).toBe(404);
    expect(response.body.Code).toBe('ObjectNotFound');
    // 52 characters, 64 bytes: cut to the 62 bytes of the 51 characters before the last.
    const cut = `${'T'.repeat(40)}${'é'.repeat(11)}`;
    await app.unsafe(`create table "${cut}" (id int)`);
    const webhook = await gw.request('POST', '/v2/outgoingWebhooks', { token, body: { Name: 'Long names', OutgoingUrls: ['https://example.com/hook'] } });
    expect(webhook.status).toBe(201);
    const event = await gw.request('POST', `/v2/outgoingWebhooks/${webhook.body.Id}/events`, {
      token,
      body: { EventType: 'table.recordInsert', ObjectName: `${cut}é` },
    });
    expect(event.status).toBe(400);
    expect(event.body.Message).toContain('was not found');
  });

  it('sees a table created after the gateway started', async () => {
    await app`create table "LateTable" (id int)`;
    const response = await gw.graphql(`{ tables }`, {}, token);
    expect(response.body.data.tables).toContain('LateTable');
  });
});

describe('events', () => {
  it('are created, listed, fetched with counts, updated and deleted', async () => {
    const { table, webhookId } = await setup();
    const created = await createEvent(webhookId, {
      EventType: 'table.recordUpdate',
      ObjectName: table,
      ObjectFields: ['Email'],
      EventSources: ['Datasheet', 'RESTAPIs'],
      CustomPayloadFields: ['PK_ID', 'Email'],
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      Type: 'table.recordUpdate',
      Status: 'Active',
      ObjectName: table,
      ObjectFields: ['Email'],
      EventSources: ['Datasheet', 'RESTAPIs'],
      CustomPayloadFields: ['PK_ID', 'Email'],
      CustomPayloadTemplate: '',
      CreatedBy: 'John Doe (john.doe@acme.com)',
    });
    expect(created.body.Id).toMatch(/^[a-z0-9]{6}$/);
    const eventId = created.body.Id;

    const list = await gw.request('GET', `/rest/v2/outgoingWebhooks/${webhookId}/events`, { token: readOnlyToken });
    expect(list.body.Result).toEqual([created.body]);

    const fetched = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events/${eventId}`, { token });
    expect(fetched.body).toEqual({ ...created.body, Messages: 0, Calls: 0, Errors: 0 });

    const updated = await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}/events/${eventId}`, {
      token,
      body: { ObjectFields: ['Email', 'Name'], Enabled: false },
    });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ ObjectFields: ['Email', 'Name'], Status: 'Inactive', EventSources: ['Datasheet', 'RESTAPIs'] });

    const webhook = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}`, { token });
    expect(webhook.body).toMatchObject({ Events: 1, Messages: 0, Calls: 0, Errors: 0 });

    const graphql = await gw.graphql(`query($id: ID!) { webhookEvents(webhookId: $id) { id type status objectFields } }`, { id: webhookId }, token);
    expect(graphql.body.data.webhookEvents).toEqual([{ id: eventId, type: 'table.recordUpdate', status: 'Inactive', objectFields: ['Email', 'Name'] }]);

    const deleted = await gw.request('DELETE', `/v2/outgoingWebhooks/${webhookId}/events/${eventId}`, { token });
    expect(deleted.status).toBe(204);
    expect((await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events/${eventId}`, { token })).status).toBe(404);
  });

  it('follow the webhook: Enabled on the webhook sets the Status of all its events', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    await createEvent(webhookId, { EventType: 'table.recordDelete', ObjectName: table });
    await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}`, { token, body: { Enabled: false } });
    let events = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events`, { token });
    expect(events.body.Result.map((event: any) => event.Status)).toEqual(['Inactive', 'Inactive']);
    await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}`, { token, body: { Enabled: true } });
    events = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events`, { token });
    expect(events.body.Result.map((event: any) => event.Status)).toEqual(['Active', 'Active']);
  });

  it('are refused with a 400 naming the field when invalid', async () => {
    const { table, webhookId } = await setup();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ObjectName: table }, /^EventType: is required/],
      [{ EventType: 'table.recordMerge', ObjectName: table }, /^EventType: must be one of/],
      [{ EventType: 'table.recordInsert' }, /^ObjectName: is required/],
      [{ EventType: 'table.recordInsert', ObjectName: 'NoSuchTable' }, /^ObjectName: table 'NoSuchTable' was not found/],
      [{ EventType: 'table.recordInsert', ObjectName: 'webhooks' }, /^ObjectName: /],
      [{ EventType: 'table.recordInsert', ObjectName: table, ObjectFields: ['Name'] }, /^ObjectFields: applies to table.recordUpdate/],
      [{ EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Nope'] }, /^ObjectFields\[0\]: 'Nope' is not a column/],
      [{ EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Name', 'Age', 'Name'] }, /^ObjectFields\[2\]: 'Name' is listed twice/],
      [{ EventType: 'table.recordInsert', ObjectName: table, CustomPayloadFields: ['Age', 'Age'] }, /^CustomPayloadFields\[1\]: 'Age' is listed twice/],
      [{ EventType: 'table.recordInsert', ObjectName: table, CustomPayloadFields: ['PK_ID', 'Nope'] }, /^CustomPayloadFields\[1\]: /],
      [{ EventType: 'table.recordInsert', ObjectName: table, EventSources: ['Email'] }, /^EventSources\[0\]: must be one of/],
      [{ EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: "{'a': " }, /^CustomPayloadTemplate: is not valid JSON/],
      [{ EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: "'text'" }, /^CustomPayloadTemplate: must be a JSON object or array/],
      [
        { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: "{'a': '[@out-hook:password]'}" },
        /^CustomPayloadTemplate: has an unknown placeholder \[@out-hook:password\]/,
      ],
      [
        { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: "{'a': '[@field:Nope]'}" },
        /^CustomPayloadTemplate: \[@field:Nope\] names no column/,
      ],
    ];
    for (const [body, message] of cases) {
      const response = await createEvent(webhookId, body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.Code).toBe('IncorrectBodyParameter');
      expect(response.body.Message).toMatch(message);
    }
  });

  it('keep the rules per webhook and table', async () => {
    const { table, webhookId } = await setup();
    expect((await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table })).status).toBe(201);
    const secondInsert = await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    expect(secondInsert.status).toBe(400);
    expect(secondInsert.body.Message).toMatch(/^EventType: the webhook already has a table.recordInsert event/);

    expect((await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Name'] })).status).toBe(201);
    expect((await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Email', 'Age'] })).status).toBe(201);
    const overlapping = await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Age'] });
    expect(overlapping.body.Message).toMatch(/^ObjectFields: column 'Age' is already watched/);
    const allColumns = await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table });
    expect(allColumns.body.Message).toMatch(/^ObjectFields: an all-columns table.recordUpdate event cannot share/);

    // Another webhook may watch the same table the same way.
    const other = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: { Name: `other-${table}`, OutgoingUrls: [`https://hooks.example.com/other/${table}`] },
    });
    expect((await createEvent(other.body.Id, { EventType: 'table.recordInsert', ObjectName: table })).status).toBe(201);
  });

  it('need webhooks:write to change and a known webhook', async () => {
    const { table, webhookId } = await setup();
    const readOnly = await gw.request('POST', `/v2/outgoingWebhooks/${webhookId}/events`, {
      token: readOnlyToken,
      body: { EventType: 'table.recordInsert', ObjectName: table },
    });
    expect(readOnly.status).toBe(403);
    const unknown = await createEvent('nope00', { EventType: 'table.recordInsert', ObjectName: table });
    expect(unknown.status).toBe(404);
  });
});

describe('change capture', () => {
  beforeEach(outboxDrained);

  it('turns an insert into a message with the default body', async () => {
    const { table, webhookId } = await setup();
    const event = await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    await app.unsafe(
      `insert into "${table}" ("Name", "Email", "Age", "Balance", "Active", "Joined", "Photo", "Tags")
       values ('Ann', 'ann@example.com', 41, 12.50, true, '2026-01-16T19:52:55.123Z', '\\x48656c6c6f', '{a,b}')`,
    );
    const [message] = await waitForMessages(webhookId, 1);
    expect(message.status).toBe('PENDING');
    expect(message.body).toEqual({
      eventId: event.body.Id,
      messageId: message.id,
      webhookId,
      accountId: 'acct-42',
      secret: '',
      eventDate: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/),
      eventType: 'table.recordInsert',
      objectName: table,
      data: [
        {
          PK_ID: 1,
          Name: 'Ann',
          Email: 'ann@example.com',
          Age: 41,
          Balance: 12.5,
          Active: true,
          Joined: '2026-01-16T19:52:55.123+00:00',
          Photo: Buffer.from('Hello').toString('base64'),
          Tags: ['a', 'b'],
        },
      ],
    });
    // Keys in the documented order, data in column order.
    expect(Object.keys(message.body)).toEqual(['eventId', 'messageId', 'webhookId', 'accountId', 'secret', 'eventDate', 'eventType', 'objectName', 'data']);
    expect(Object.keys(message.body.data[0])[0]).toBe('PK_ID');
  });

  it('puts the secret in the body only with DefaultPayloadIncludesSecret', async () => {
    const { table, webhookId } = await setup();
    const webhook = await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}`, { token, body: { DefaultPayloadIncludesSecret: true } });
    await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadFields: ['Name'] });
    await app.unsafe(`insert into "${table}" ("Name", "Age") values ('Bo', 7)`);
    const [message] = await waitForMessages(webhookId, 1);
    expect(message.body.secret).toBe(webhook.body.Secret);
    expect(message.body.data).toEqual([{ Name: 'Bo' }]);
  });

  it('fires updates on any column, or only on the ObjectFields, and never on a no-op update', async () => {
    const { table, webhookId } = await setup();
    await app.unsafe(`insert into "${table}" ("Name", "Email", "Age") values ('Cy', 'cy@example.com', 30)`);
    const anyColumn = await setup();
    await app.unsafe(`insert into "${anyColumn.table}" ("Name", "Email", "Age") values ('Cy', 'cy@example.com', 30)`);
    const emailEvent = await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Email'] });
    await createEvent(anyColumn.webhookId, { EventType: 'table.recordUpdate', ObjectName: anyColumn.table });

    for (const name of [table, anyColumn.table]) {
      await app.unsafe(`update "${name}" set "Age" = 31`); // not Email
      await app.unsafe(`update "${name}" set "Age" = 31`); // changes nothing
      await app.unsafe(`update "${name}" set "Email" = 'cy@new.example.com'`);
    }
    await outboxDrained();
    const onlyEmail = await messagesOf(webhookId);
    expect(onlyEmail).toHaveLength(1);
    expect(onlyEmail[0].eventId).toBe(emailEvent.body.Id);
    expect(onlyEmail[0].body.data[0]).toMatchObject({ Email: 'cy@new.example.com', Age: 31 });

    const all = await messagesOf(anyColumn.webhookId);
    expect(all.map((message) => message.body.data[0].Age)).toEqual([31, 31]);
  });

  it('turns a delete into a message with the deleted row', async () => {
    const { table, webhookId } = await setup();
    await app.unsafe(`insert into "${table}" ("Name") values ('Di')`);
    await createEvent(webhookId, { EventType: 'table.recordDelete', ObjectName: table });
    await app.unsafe(`delete from "${table}"`);
    const [message] = await waitForMessages(webhookId, 1);
    expect(message.body).toMatchObject({ eventType: 'table.recordDelete', data: [{ PK_ID: 1, Name: 'Di' }] });
  });

  it('makes one message per row of a multi-row statement, and one per matching event', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    const second = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: { Name: `second-${table}`, OutgoingUrls: [`https://hooks.example.com/second/${table}`] },
    });
    await createEvent(second.body.Id, { EventType: 'table.recordInsert', ObjectName: table });
    await app.unsafe(`insert into "${table}" ("Name") select 'row ' || n from generate_series(1, 25) n`);
    const first = await waitForMessages(webhookId, 25);
    expect(first.map((message) => message.body.data[0].Name)).toEqual(Array.from({ length: 25 }, (_, i) => `row ${i + 1}`));
    expect(await waitForMessages(second.body.Id, 25)).toHaveLength(25);
  });

  it('makes nothing of a rolled-back transaction', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    await app
      .begin(async (tx) => {
        await tx.unsafe(`insert into "${table}" ("Name") values ('ghost')`);
        throw new Error('roll back');
      })
      .catch(() => undefined);
    await app.unsafe(`insert into "${table}" ("Name") values ('real')`);
    await outboxDrained();
    const list = await messagesOf(webhookId);
    expect(list.map((message) => message.body.data[0].Name)).toEqual(['real']);
  });

  it('makes nothing for a disabled event or a disabled webhook, and removes the trigger when unused', async () => {
    const { table, webhookId } = await setup();
    const event = await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    expect(await triggersOn(table)).toEqual(['webhook_gateway_insert']);

    await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}/events/${event.body.Id}`, { token, body: { Enabled: false } });
    expect(await triggersOn(table)).toEqual([]);
    await app.unsafe(`insert into "${table}" ("Name") values ('while the event is off')`);

    await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}/events/${event.body.Id}`, { token, body: { Enabled: true } });
    await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}`, { token, body: { Enabled: false } });
    await app.unsafe(`insert into "${table}" ("Name") values ('while the webhook is off')`);

    await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}`, { token, body: { Enabled: true } });
    await app.unsafe(`insert into "${table}" ("Name") values ('on')`);
    await outboxDrained();
    expect((await messagesOf(webhookId)).map((message) => message.body.data[0].Name)).toEqual(['on']);

    await gw.request('DELETE', `/v2/outgoingWebhooks/${webhookId}/events/${event.body.Id}`, { token });
    expect(await triggersOn(table)).toEqual([]);
    await app.unsafe(`insert into "${table}" ("Name") values ('after delete')`);
    const [{ n }] = await app<[{ n: number }]>`select count(*)::int as n from webhook_gateway.outbox`;
    expect(n).toBe(0); // no trigger: nothing is even captured
  });

  it('captures updates of tables whose columns have no equality operator (json, xml, point), and skips no-op ones', async () => {
    const { webhookId } = await setup();
    const table = `Shapes${counter}`;
    await app.unsafe(`create table "${table}" (id serial primary key, doc json, note xml, at point)`);
    await app.unsafe(`insert into "${table}" (doc, note, at) values ('{}', '<a/>', point(1, 2))`);
    expect((await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table })).status).toBe(201);
    await app.unsafe(`update "${table}" set doc = '{"a": 1}'`);
    await app.unsafe(`update "${table}" set at = point(3, 4)`);
    await app.unsafe(`update "${table}" set note = '<b/>'`);
    await app.unsafe(`update "${table}" set id = id`); // changes nothing
    await outboxDrained();
    const captured = await messagesOf(webhookId);
    expect(captured.map((message) => message.body.data[0])).toEqual([
      { id: 1, doc: { a: 1 }, note: '<a/>', at: '(1,2)' },
      { id: 1, doc: { a: 1 }, note: '<a/>', at: '(3,4)' },
      { id: 1, doc: { a: 1 }, note: '<b/>', at: '(3,4)' },
    ]);
  });

  it("captures a partitioned table's updates under its own name, and leaves its partitions' trigger copies alone", async () => {
    const { webhookId } = await setup();
    const table = `Regions${counter}`;
    await app.unsafe(`create table "${table}" (id int, region text, amount int) partition by list (region)`);
    await app.unsafe(`create table "${table}_eu" partition of "${table}" for values in ('eu')`);
    await app.unsafe(`insert into "${table}" values (1, 'eu', 10)`);
    expect((await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table })).status).toBe(201);
    expect(await triggersOn(`${table}_eu`)).toEqual(['webhook_gateway_update']); // Postgres' copy

    // Other webhooks' events sync the triggers too: the copy is not the gateway's to drop.
    const other = await setup();
    expect((await createEvent(other.webhookId, { EventType: 'table.recordDelete', ObjectName: other.table })).status).toBe(201);
    expect((await gw.request('PUT', `/v2/outgoingWebhooks/${other.webhookId}`, { token, body: { Enabled: false } })).status).toBe(200);
    expect((await gw.request('DELETE', `/v2/outgoingWebhooks/${other.webhookId}`, { token })).status).toBe(204);

    await app.unsafe(`update "${table}" set amount = 11`);
    await app.unsafe(`update "${table}_eu" set amount = 12`);
    const captured = await waitForMessages(webhookId, 2);
    expect(captured.map((message) => [message.objectName, message.body.data[0].amount])).toEqual([
      [table, 11],
      [table, 12],
    ]);

    // The partition's own update event is served by the copy while the partitioned table has
    // one, and gets its own trigger back when the partitioned table's event goes.
    const partition = await setup();
    const own = await createEvent(partition.webhookId, { EventType: 'table.recordUpdate', ObjectName: `${table}_eu` });
    expect(own.status).toBe(201);
    const [event] = (await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events`, { token })).body.Result;
    expect((await gw.request('DELETE', `/v2/outgoingWebhooks/${webhookId}/events/${event.Id}`, { token })).status).toBe(204);
    expect(await triggersOn(table)).toEqual([]);
    expect(await triggersOn(`${table}_eu`)).toEqual(['webhook_gateway_update']);
    await app.unsafe(`update "${table}_eu" set amount = 13`);
    const [ownMessage] = await waitForMessages(partition.webhookId, 1);
    expect([ownMessage.objectName, ownMessage.body.data[0].amount]).toEqual([`${table}_eu`, 13]);

    expect((await gw.request('DELETE', `/v2/outgoingWebhooks/${partition.webhookId}/events/${own.body.Id}`, { token })).status).toBe(204);
    expect(await triggersOn(`${table}_eu`)).toEqual([]);
  });

  it('installs only the triggers the events need and keeps them while another webhook needs them', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, { EventType: 'table.recordUpdate', ObjectName: table, ObjectFields: ['Name'] });
    await createEvent(webhookId, { EventType: 'table.recordDelete', ObjectName: table });
    expect(await triggersOn(table)).toEqual(['webhook_gateway_delete', 'webhook_gateway_update']);
    const other = await gw.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: { Name: `keeper-${table}`, OutgoingUrls: [`https://hooks.example.com/keeper/${table}`] },
    });
    await createEvent(other.body.Id, { EventType: 'table.recordDelete', ObjectName: table });
    await gw.request('DELETE', `/v2/outgoingWebhooks/${webhookId}`, { token });
    expect(await triggersOn(table)).toEqual(['webhook_gateway_delete']);
  });

  it('lets a dropped column render as null in templates, and fires again once a dropped table is back', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, {
      EventType: 'table.recordInsert',
      ObjectName: table,
      CustomPayloadTemplate: "{'name': '[@field:Name]', 'age': '[@field:Age]'}",
    });
    await app.unsafe(`alter table "${table}" drop column "Age"`);
    await app.unsafe(`insert into "${table}" ("Name") values ('Ed')`);
    const [message] = await waitForMessages(webhookId, 1);
    expect(message.body).toEqual({ name: 'Ed', age: null });
    await app.unsafe(`drop table "${table}"`);
    const events = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events`, { token });
    expect(events.body.Result).toHaveLength(1); // the definition stays, to fire again if the table comes back

    await app.unsafe(`create table "${table}" ("PK_ID" serial primary key, "Name" text)`);
    // What the dispatcher runs every 30 seconds, run now.
    await gw.gateway.database.db.transaction((tx) => syncCaptureTriggers(tx, 'public'));
    expect(await triggersOn(table)).toEqual(['webhook_gateway_insert']);
    await app.unsafe(`insert into "${table}" ("Name") values ('Flo')`);
    const [, again] = await waitForMessages(webhookId, 2);
    expect(again.body).toEqual({ name: 'Flo', age: null });
  });
});

/** A template of `depth` levels, objects and arrays in turn, around `{'id': '[@field:PK_ID]'}`. */
function nestedTemplate(depth: number): string {
  let template = "{'id': '[@field:PK_ID]'}";
  for (let level = 2; level <= depth; level++) template = level % 2 === 0 ? `[${template}]` : `{'level${level}': ${template}}`;
  return template;
}

describe('payload templates', () => {
  beforeEach(outboxDrained);

  it('nest at most 32 levels: a deeper one is refused when saved, over REST and GraphQL', async () => {
    const { table, webhookId } = await setup();
    const tooDeep = nestedTemplate(33);
    const refused = [
      await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: tooDeep }),
      // The auditor's: thousands of levels that the renderer could not take.
      await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: '['.repeat(4400) + ']'.repeat(4400) }),
    ];
    for (const response of refused) {
      expect(response.status).toBe(400);
      expect(response.body).toMatchObject({ Code: 'IncorrectBodyParameter', Message: 'CustomPayloadTemplate: nests objects and arrays more than 32 levels deep' });
    }

    const atLimit = await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: nestedTemplate(32) });
    expect(atLimit.status).toBe(201);
    const updated = await gw.request('PUT', `/v2/outgoingWebhooks/${webhookId}/events/${atLimit.body.Id}`, {
      token,
      body: { CustomPayloadTemplate: tooDeep },
    });
    expect(updated.status).toBe(400);
    expect(updated.body.Message).toMatch(/^CustomPayloadTemplate: nests objects and arrays more than 32 levels deep/);

    const viaGraphQL = [
      await gw.graphql(
        `mutation($webhookId: ID!, $input: CreateWebhookEventInput!) { createWebhookEvent(webhookId: $webhookId, input: $input) { id } }`,
        { webhookId, input: { eventType: 'table.recordDelete', objectName: table, customPayloadTemplate: tooDeep } },
        token,
      ),
      await gw.graphql(
        `mutation($webhookId: ID!, $id: ID!, $input: UpdateWebhookEventInput!) { updateWebhookEvent(webhookId: $webhookId, id: $id, input: $input) { id } }`,
        { webhookId, id: atLimit.body.Id, input: { customPayloadTemplate: tooDeep } },
        token,
      ),
    ];
    for (const response of viaGraphQL) {
      expect(response.body.errors[0]).toMatchObject({
        message: 'customPayloadTemplate: nests objects and arrays more than 32 levels deep',
        extensions: { code: 'IncorrectBodyParameter', field: 'customPayloadTemplate' },
      });
    }
    const kept = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}/events/${atLimit.body.Id}`, { token });
    expect(kept.body.CustomPayloadTemplate).toBe(nestedTemplate(32));
  });

  it('fill every placeholder into the parsed structure', async () => {
    const { table, webhookId } = await setup();
    const webhook = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}`, { token });
    const template =
      "{'secret': '[@out-hook:secret]', 'webhookId': '[@out-hook:webhookId]', 'messageId': '[@out-hook:messageId]', " +
      "'eventId': '[@out-hook:eventId]', 'callId': '[@out-hook:callId]', 'accountId': '[@out-hook:accountId]', " +
      "'eventDate': '[@out-hook:eventDate]', 'eventType': '[@out-hook:eventType]', 'objectName': '[@out-hook:objectName]', " +
      "'data': [{'PK_ID': '[@field:PK_ID]', 'label': 'customer [@field:Name] (#[@field:PK_ID])', 'active': '[@field:Active]'}]}";
    const event = await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table, CustomPayloadTemplate: template });
    expect(event.status).toBe(201);
    expect(event.body.CustomPayloadTemplate).toBe(template);
    await app.unsafe(`insert into "${table}" ("Name", "Active") values ('Fay', false)`);
    const [message] = await waitForMessages(webhookId, 1);
    expect(message.body).toEqual({
      secret: webhook.body.Secret,
      webhookId,
      messageId: message.id,
      eventId: event.body.Id,
      callId: '',
      accountId: 'acct-42',
      eventDate: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/),
      eventType: 'table.recordInsert',
      objectName: table,
      data: [{ PK_ID: 1, label: 'customer Fay (#1)', active: false }],
    });
  });

  it('keep quotes and brackets in values inside their string', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, {
      EventType: 'table.recordInsert',
      ObjectName: table,
      CustomPayloadTemplate: "{'name': '[@field:Name]', 'quoted': 'said: [@field:Name]', 'missing': '[@field:Email]'}",
    });
    const nasty = `O'Brien", "injected": true, "x": ["[@out-hook:secret]"]}`;
    await app`insert into ${app(table)} ("Name") values (${nasty})`;
    const [message] = await waitForMessages(webhookId, 1);
    expect(message.body).toEqual({ name: nasty, quoted: `said: ${nasty}`, missing: null });
    expect(Object.keys(message.body)).toEqual(['name', 'quoted', 'missing']);
  });

  it('keep line breaks, tabs, backslashes and other characters of values, row by row in one batch', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    const values = ['two\nlines', 'crlf\r\nand\ttab', 'back\\slash \\n "quoted"', 'sep\u2028ara\u2029tors, emoji 🎉, nul-free', ''];
    await app`insert into ${app(table)} ("Name") select unnest(${values}::text[])`;
    const messages = await waitForMessages(webhookId, values.length);
    const names = messages.map((message: { body: { data: { Name: string }[] } }) => message.body.data[0]!.Name);
    expect(names.sort()).toEqual([...values].sort());
  });
});

describe('messages over GraphQL', () => {
  it('page newest first with cursors and filter by status', async () => {
    const { table, webhookId } = await setup();
    await createEvent(webhookId, { EventType: 'table.recordInsert', ObjectName: table });
    await app.unsafe(`insert into "${table}" ("Name") select 'p' || n from generate_series(1, 5) n`);
    await waitForMessages(webhookId, 5);
    const page = (after?: string) =>
      gw.graphql(
        `query($id: ID!, $after: String) { messages(webhookId: $id, first: 2, after: $after, status: PENDING) {
           edges { cursor node { id body } } pageInfo { hasNextPage endCursor } } }`,
        { id: webhookId, after },
        token,
      );
    const names: string[] = [];
    let after: string | undefined;
    for (;;) {
      const response = await page(after);
      const connection = response.body.data.messages;
      names.push(...connection.edges.map((edge: any) => JSON.parse(edge.node.body).data[0].Name));
      if (!connection.pageInfo.hasNextPage) break;
      after = connection.pageInfo.endCursor;
    }
    expect(names).toEqual(['p5', 'p4', 'p3', 'p2', 'p1']);

    const none = await gw.graphql(`query($id: ID!) { messages(webhookId: $id, status: SUCCEEDED) { edges { cursor } } }`, { id: webhookId }, token);
    expect(none.body.data.messages.edges).toEqual([]);

    const [first] = await messagesOf(webhookId);
    const one = await gw.graphql(`query($id: ID!) { message(id: $id) { id status eventType objectName } }`, { id: first.id }, readOnlyToken);
    expect(one.body.data.message).toEqual({ id: first.id, status: 'PENDING', eventType: 'table.recordInsert', objectName: table });

    const webhook = await gw.request('GET', `/v2/outgoingWebhooks/${webhookId}`, { token });
    expect(webhook.body.Messages).toBe(5);
  });

  it('answer an unknown webhook with ObjectNotFound and a known one without messages with an empty page', async () => {
    const { webhookId } = await setup();
    const query = `query($id: ID!) { messages(webhookId: $id) { edges { cursor } pageInfo { hasNextPage } } }`;
    for (const caller of [token, readOnlyToken]) {
      const unknown = await gw.graphql(query, { id: 'zzzzzz' }, caller);
      expect(unknown.body.errors?.[0]).toMatchObject({ message: "Webhook 'zzzzzz' was not found", extensions: { code: 'ObjectNotFound' } });
      expect(unknown.body.data).toBeNull();
      const empty = await gw.graphql(query, { id: webhookId }, caller);
      expect(empty.body).toEqual({ data: { messages: { edges: [], pageInfo: { hasNextPage: false } } } });
    }
    await gw.request('DELETE', `/v2/outgoingWebhooks/${webhookId}`, { token });
    const deleted = await gw.graphql(query, { id: webhookId }, token);
    expect(deleted.body.errors?.[0]?.extensions.code).toBe('ObjectNotFound');
  });

  it('refuse a bad cursor or page size with IncorrectQueryParameter', async () => {
    const bad = await gw.graphql(`{ messages(webhookId: "x", after: "bogus") { edges { cursor } } }`, {}, token);
    expect(bad.body.errors[0].extensions.code).toBe('IncorrectQueryParameter');
    const { webhookId } = await setup();
    const outOfRange = Buffer.from(`m:${'9'.repeat(23)}`).toString('base64url');
    const query = `query($id: ID!, $after: String) { messages(webhookId: $id, after: $after) { edges { cursor } } }`;
    const tooLong = await gw.graphql(query, { id: webhookId, after: outOfRange }, token);
    expect(tooLong.body.errors[0].extensions).toEqual({ code: 'IncorrectQueryParameter', field: 'after' });
    const big = await gw.graphql(`{ messages(webhookId: "x", first: 1000) { edges { cursor } } }`, {}, token);
    expect(big.body.errors[0].extensions).toEqual({ code: 'IncorrectQueryParameter', field: 'first' });
    const missing = await gw.graphql(`{ message(id: "00000000-0000-0000-0000-000000000000") { id } }`, {}, token);
    expect(missing.body.errors[0].extensions.code).toBe('ObjectNotFound');
  });
});
