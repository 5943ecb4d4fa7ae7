import postgres from 'postgres';
import { expect, it } from 'vitest';
import { startTestGateway } from './support/gateway';
import { waitFor } from './support/wait';

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
