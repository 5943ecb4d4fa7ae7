import postgres from 'postgres';
import { expect, it } from 'vitest';
import { dispatchBatch } from '../src/capture/dispatcher';
import { loadConfig } from '../src/config';
import { startTestGateway } from './support/gateway';
import { waitFor } from './support/wait';
import { createWatchedWebhook } from './support/watched';

/** A gateway that serves the API only (no dispatcher runs unless a test starts one), a client of its database, and a dispatcher's batch run on demand. */
async function apiOnly() {
  const api = await startTestGateway({ ROLES: 'api' });
  const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
  const config = loadConfig({ DATABASE_URL: api.databaseUrl });
  const dispatch = (options?: Parameters<typeof dispatchBatch>[2]) => dispatchBatch(api.gateway.database.db, config, options);
  return { api, app, dispatch };
}

it('keeps changes while no dispatcher runs, then two dispatchers turn each into exactly one message', async () => {
  const api = await startTestGateway({ ROLES: 'api' });
  const app = postgres(api.databaseUrl, { max: 4, onnotice: () => {} });
  const dispatchers: Awaited<ReturnType<typeof startTestGateway>>[] = [];
  try {
    const token = await api.token();
    await app`create table "Orders" (id serial primary key, item text)`;
    const webhook = await api.request('POST', '/v2/outgoingWebhooks', {
      token,
      body: { Name: 'orders', OutgoingUrls: ['https://hooks.example.com/orders'] },
    });
    await api.request('POST', `/v2/outgoingWebhooks/${webhook.body.Id}/events`, {
      token,
      body: { EventType: 'table.recordInsert', ObjectName: 'Orders' },
    });

    // Several applications write while no dispatcher runs: everything waits in the outbox.
    const rows = 1200;
    await Promise.all(
      Array.from({ length: 4 }, (_, writer) =>
        app`insert into "Orders" (item) select ${`w${writer}-`} || n from generate_series(1, ${rows / 4}) n`,
      ),
    );
    const [{ pending }] = await app<[{ pending: number }]>`select count(*)::int as pending from webhook_gateway.outbox`;
    expect(pending).toBe(rows);
    const [{ made }] = await app<[{ made: number }]>`select count(*)::int as made from webhook_gateway.messages`;
    expect(made).toBe(0);

    // Two dispatcher processes start at once and share the backlog.
    dispatchers.push(...(await Promise.all([1, 2].map(() => startTestGateway({ ROLES: 'dispatcher' }, api.databaseUrl)))));
    await waitFor(async () => {
      const [{ left }] = await app<[{ left: number }]>`select count(*)::int as left from webhook_gateway.outbox`;
      return left === 0 ? true : undefined;
    }, 20_000, 'the outbox to drain');

    const messages = await app`select body::json -> 'data' -> 0 ->> 'id' as row_id from webhook_gateway.messages`;
    expect(messages).toHaveLength(rows);
    expect(new Set(messages.map((message) => message.row_id)).size).toBe(rows);
  } finally {
    await Promise.all(dispatchers.map((gateway) => gateway.stop()));
    await app.end();
    await api.stop();
  }
});

it('stops a batch at its row-data budget (its first change goes whatever its size), and writes many large bodies in parts', async () => {
  const { api, app, dispatch } = await apiOnly();
  try {
    const token = await api.token();
    await createWatchedWebhook(api, token, app, { table: 'Large', urls: ['https://hooks.example.com/one'] });
    // A second webhook on the same table: every change makes two messages.
    const other = await createWatchedWebhook(api, token, app, { table: 'Large2', urls: ['https://hooks.example.com/two'] });
    await api.request('POST', `/v2/outgoingWebhooks/${other.Id}/events`, { token, body: { EventType: 'table.recordInsert', ObjectName: 'Large' } });

    // Five changes of about 300 KB each against a 1 MB budget: four fit (the fourth starts under it).
    await app`insert into "Large" (note) select repeat(chr(96 + n), 300000) from generate_series(1, 5) n`;
    expect(await dispatch({ maxBytes: 1_000_000 })).toMatchObject({ changes: 4, messages: 8 });
    expect(await dispatch({ maxBytes: 1_000_000 })).toMatchObject({ changes: 1, messages: 2 });
    // A change larger than the whole budget still goes, alone.
    await app`insert into "Large" (note) select repeat('z', 300000) from generate_series(1, 2)`;
    expect(await dispatch({ maxBytes: 100_000 })).toMatchObject({ changes: 1, messages: 2 });
    expect(await dispatch({ maxBytes: 100_000 })).toMatchObject({ changes: 1, messages: 2 });

    // Every body whole, each message with its delivery, nothing left behind.
    const made = await app<{ note: string; deliveries: number }[]>`
      select m.body::json -> 'data' -> 0 ->> 'note' as note, (select count(*)::int from webhook_gateway.deliveries d where d.message_id = m.id) as deliveries
      from webhook_gateway.messages m order by m.seq`;
    expect(made.map((message) => `${message.note[0]}${message.note.length}/${message.deliveries}`)).toEqual(
      ['a', 'a', 'b', 'b', 'c', 'c', 'd', 'd', 'e', 'e', 'z', 'z', 'z', 'z'].map((letter) => `${letter}300000/1`),
    );
    const [{ left }] = await app<[{ left: number }]>`select count(*)::int as left from webhook_gateway.outbox`;
    expect(left).toBe(0);
  } finally {
    await app.end();
    await api.stop();
  }
});

it('books a batch read during a change of CallThrottling under the new limit, once the change commits', async () => {
  const { api, app, dispatch } = await apiOnly();
  try {
    const token = await api.token();
    const hook = await createWatchedWebhook(api, token, app, { table: 'Changing', urls: ['https://hooks.example.com/changing'], webhook: { CallThrottling: 5 } });
    await app`insert into "Changing" select from generate_series(1, 3)`;

    // A change of the limit under way, holding the webhook's row as updateWebhook does: the batch waits for it.
    let batch: ReturnType<typeof dispatch> | undefined;
    await app.begin(async (change) => {
      await change`select 1 from webhook_gateway.webhooks where id = ${hook.Id} for update`;
      await change`update webhook_gateway.webhooks set call_throttling = 50, throttle_epoch = throttle_epoch + 1 where id = ${hook.Id}`;
      batch = dispatch();
      const first = await Promise.race([batch.then(() => 'dispatched'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 500))]);
      expect(first).toBe('waiting');
    });
    // Read after the change committed, it hands its deliveries over under the new limit and epoch.
    const { deliveries } = await batch!;
    expect(deliveries.map(({ callThrottling, throttleEpoch }) => ({ callThrottling, throttleEpoch }))).toEqual(
      Array.from({ length: 3 }, () => ({ callThrottling: 50, throttleEpoch: 1 })),
    );
  } finally {
    await app.end();
    await api.stop();
  }
});

it('delivers to every URL a change whose event is deleted while its batch waits for the webhook', async () => {
  const { api, app, dispatch } = await apiOnly();
  try {
    const token = await api.token();
    const urls = ['https://hooks.example.com/first', 'https://hooks.example.com/second'];
    const hook = await createWatchedWebhook(api, token, app, { table: 'Vanishing', urls });
    await app`insert into "Vanishing" select from generate_series(1, 2)`;

    // The event's deletion under way, holding the webhook's row as deleteEvent does: the batch's
    // read of the events waits for it, and still returns the event once it commits; the URLs are
    // read by a later statement, which no longer sees the event.
    let batch: ReturnType<typeof dispatch> | undefined;
    await app.begin(async (change) => {
      await change`select 1 from webhook_gateway.webhooks where id = ${hook.Id} for update`;
      await change`delete from webhook_gateway.webhook_events where webhook_id = ${hook.Id}`;
      batch = dispatch();
      const first = await Promise.race([batch.then(() => 'dispatched'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 500))]);
      expect(first).toBe('waiting');
    });
    const result = await batch!;
    expect(result).toMatchObject({ changes: 2, messages: 2 });
    const made = await app<{ message_id: string; url: string }[]>`
      select message_id, url from webhook_gateway.deliveries order by message_id, url`;
    expect(made).toHaveLength(4);
    expect(new Set(made.map((delivery) => delivery.url))).toEqual(new Set(urls));
  } finally {
    await app.end();
    await api.stop();
  }
});

it('catches up with deliveries waiting unqueued under a steady load, however many each change makes', { timeout: 90_000 }, async () => {
  const { api, app, dispatch } = await apiOnly();
  let dispatcher: Awaited<ReturnType<typeof startTestGateway>> | undefined;
  try {
    const token = await api.token();
    // Six URLs: every change makes six deliveries, more per batch than a sweep's least share of a turn.
    const urls = Array.from({ length: 6 }, (_, index) => `https://hooks${index}.example.com/fan`);
    const hook = await createWatchedWebhook(api, token, app, { table: 'Fan', urls });
    await app`insert into "Fan" default values`;
    await dispatch();
    // One delivery waits unqueued (a redelivery, say): the webhook's new deliveries wait behind it.
    await app`update webhook_gateway.deliveries set queued = false where id = (select min(id) from webhook_gateway.deliveries)`;
    await app`insert into "Fan" select from generate_series(1, 12000)`;
    dispatcher = await startTestGateway({ ROLES: 'dispatcher' }, api.databaseUrl);
    // The waiting ones are all handed over while changes are still coming in, not only once they stop.
    const outboxWhenCaughtUp = await waitFor(async () => {
      const [state] = await app<[{ outbox: number; unqueued: number }]>`select
        (select count(*)::int from webhook_gateway.outbox) as outbox,
        (select count(*)::int from webhook_gateway.deliveries where not queued and webhook_id = ${hook.Id}) as unqueued`;
      return state.unqueued === 0 ? state.outbox : undefined;
    }, 60_000, 'no deliveries left unqueued');
    expect(outboxWhenCaughtUp).toBeGreaterThan(0);
  } finally {
    await dispatcher?.stop();
    await app.end();
    await api.stop();
  }
});

it('goes on past an event whose stored template cannot be rendered (saved before the depth limit), making the other webhooks\' messages', async () => {
  const { api, app, dispatch } = await apiOnly();
  try {
    const token = await api.token();
    const deep = await createWatchedWebhook(api, token, app, { table: 'Deep', urls: ['https://hooks.example.com/deep'] });
    const other = await api.request('POST', '/v2/outgoingWebhooks', { token, body: { Name: 'other', OutgoingUrls: ['https://hooks.example.com/other'] } });
    await api.request('POST', `/v2/outgoingWebhooks/${other.body.Id}/events`, { token, body: { EventType: 'table.recordInsert', ObjectName: 'Deep' } });
    // What the API took before it refused templates nested over 32 levels: rendering the first
    // exhausts the stack; the second, 40 levels deep, renders as it did.
    const [event] = await app<[{ id: string }]>`update webhook_gateway.webhook_events
      set custom_payload_template = ${'['.repeat(4400) + ']'.repeat(4400)} where webhook_id = ${deep.Id} returning id`;
    const nested = (inner: string) => '['.repeat(39) + inner + ']'.repeat(39);
    await app`update webhook_gateway.webhook_events set custom_payload_template = ${nested('{"note":"[@field:note]"}')}
      where webhook_id = ${other.body.Id}`;
    await app`insert into "Deep" (note) values ('still delivered')`;

    const result = await dispatch();
    expect(result).toMatchObject({
      changes: 1,
      messages: 1,
      unrenderable: [{ eventId: event.id, webhookId: deep.Id, problem: 'CustomPayloadTemplate nests objects and arrays more than 1000 levels deep' }],
    });
    const made = await app`select webhook_id, body from webhook_gateway.messages`;
    expect(made).toEqual([{ webhook_id: other.body.Id, body: nested('{"note":"still delivered"}') }]);
  } finally {
    await app.end();
    await api.stop();
  }
});
