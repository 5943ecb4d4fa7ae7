import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { startGateway } from '../src/gateway';
import { createLogger } from '../src/logger';
import { parseResponse } from './support/gateway';
import { Receiver } from './support/receiver';
import { waitFor } from './support/wait';

it('runs on the embedded database when DATABASE_URL is unset, serves it to other programs, and delivers its table changes', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gw-embedded-'));
  const receiver = await new Receiver().start();
  const config = loadConfig({
    PORT: '0',
    EMBEDDED_DB_DIR: dataDir,
    EMBEDDED_DB_PORT: '0',
    LOG_LEVEL: 'silent',
    ALLOW_PRIVATE_TARGETS: 'true',
  });
  const gateway = await startGateway(config, createLogger('silent'));
  try {
    expect(gateway.database.kind).toBe('embedded');
    expect(gateway.bootstrap.kind).toBe('created');
    if (gateway.bootstrap.kind !== 'created') return;
    const { clientId, clientSecret } = gateway.bootstrap.credentials;
    const token = await parseResponse(
      await fetch(`${gateway.url}/oauth/token`, {
        method: 'POST',
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
      }),
    );
    const created = await parseResponse(
      await fetch(`${gateway.url}/v2/outgoingWebhooks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.body.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ Name: 'EmbeddedHook', OutgoingUrls: ['https://embedded.example.com/hook'] }),
      }),
    );
    expect(created.status).toBe(201);

    // Another program (psql, the user's application) reaches the same database over the served port.
    const client = postgres(gateway.database.embeddedUrl!, { max: 1, onnotice: () => {} });
    try {
      const rows = await client`select name from webhook_gateway.webhooks`;
      expect(rows.map((row) => row.name)).toEqual(['EmbeddedHook']);

      // The whole path on the embedded database: a row inserted by that program reaches a receiver, and the attempt is recorded.
      await client`create table embedded_orders (id serial primary key, item text)`;
      const headers = { authorization: `Bearer ${token.body.access_token}`, 'content-type': 'application/json' };
      const hook = await parseResponse(
        await fetch(`${gateway.url}/v2/outgoingWebhooks`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ Name: 'EmbeddedDelivery', OutgoingUrls: [`${receiver.url}/embedded`] }),
        }),
      );
      const event = await parseResponse(
        await fetch(`${gateway.url}/v2/outgoingWebhooks/${hook.body.Id}/events`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ EventType: 'table.recordInsert', ObjectName: 'embedded_orders' }),
        }),
      );
      expect(event.status).toBe(201);
      await client`insert into embedded_orders (item) values ('tea')`;
      const call = await waitFor(async () => receiver.calls.find((received) => received.path === '/embedded'), 20_000, 'the delivery');
      expect(JSON.parse(call.body).data).toEqual([{ id: 1, item: 'tea' }]);
      const recorded = await waitFor(async () => {
        const [message] = await client`select count(a.id)::int as attempts,
            (select bool_and(d.status = 'SUCCEEDED') from webhook_gateway.deliveries d where d.message_id = m.id) as succeeded
          from webhook_gateway.messages m left join webhook_gateway.delivery_attempts a on a.message_id = m.id group by m.id`;
        return message?.succeeded ? message : undefined;
      }, 10_000, 'the message to be settled');
      expect(recorded.attempts).toBe(1);

      // A change of the limit (which rebooks the waiting deliveries) works there too, and the next row goes out under it.
      const changed = await fetch(`${gateway.url}/v2/outgoingWebhooks/${hook.body.Id}`, {
        method: 'PUT',
        headers,
        body: JSON.stringify({ CallThrottling: 5 }),
      });
      expect(changed.status).toBe(200);
      await client`insert into embedded_orders (item) values ('coffee')`;
      const next = await waitFor(async () => receiver.calls.find((received) => received.body.includes('coffee')), 20_000, 'the delivery after the change');
      expect(JSON.parse(next.body).data).toEqual([{ id: 2, item: 'coffee' }]);
    } finally {
      await client.end();
    }
  } finally {
    await gateway.stop();
    await receiver.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
