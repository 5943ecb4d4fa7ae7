import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import postgres from 'postgres';
import { expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { startGateway } from '../src/gateway';
import { createLogger } from '../src/logger';
import { parseResponse } from './support/gateway';
import { Receiver } from './support/receiver';
import { waitFor } from './support/wait';

it('runs on the embedded database when DATABASE_URL is unset, serves it to other programs, and delivers its table changes, with no warning', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gw-embedded-'));
  const receiver = await new Receiver().start();
  const config = loadConfig({
    PORT: '0',
    EMBEDDED_DB_DIR: dataDir,
    EMBEDDED_DB_PORT: '0',
    LOG_LEVEL: 'silent',
    ALLOW_PRIVATE_TARGETS: 'true',
  });
  const logged: { level: number; msg: string }[] = [];
  const log = createLogger('info', new Writable({ write: (chunk, _encoding, done) => done(void logged.push(JSON.parse(String(chunk)))) }));
  const gateway = await startGateway(config, log);
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

      // Redis was up all along, and this installation's queue had nothing to rebuild.
      expect(logged.filter((line) => line.level >= 40)).toEqual([]);
      expect(logged.map((line) => line.msg)).not.toContain('delivery queue (re)built from Postgres');
    } finally {
      await client.end();
    }
  } finally {
    await gateway.stop();
    await receiver.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

it("keeps an outside client's transaction from the gateway's own queries: its rollback leaves nothing, its commit fires", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gw-embedded-'));
  const receiver = await new Receiver().start();
  const config = loadConfig({ PORT: '0', EMBEDDED_DB_DIR: dataDir, EMBEDDED_DB_PORT: '0', LOG_LEVEL: 'silent', ALLOW_PRIVATE_TARGETS: 'true' });
  const gateway = await startGateway(config, createLogger('silent'));
  const url = gateway.database.embeddedUrl!;
  const notices: string[] = [];
  const client = postgres(url, { max: 1, onnotice: (notice) => notices.push(String(notice.message)) });
  try {
    if (gateway.bootstrap.kind !== 'created') throw new Error('expected a new installation');
    const { clientId, clientSecret } = gateway.bootstrap.credentials;
    const token = await parseResponse(
      await fetch(`${gateway.url}/oauth/token`, {
        method: 'POST',
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
      }),
    );
    const request = async (method: string, path: string, body?: unknown) =>
      parseResponse(
        await fetch(`${gateway.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${token.body.access_token}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        }),
      );
    await client`create table probe_orders (id serial primary key, item text)`;
    const hook = await request('POST', '/v2/outgoingWebhooks', { Name: 'Probe', OutgoingUrls: [`${receiver.url}/probe`] });
    expect((await request('POST', `/v2/outgoingWebhooks/${hook.body.Id}/events`, { EventType: 'table.recordInsert', ObjectName: 'probe_orders' })).status).toBe(201);

    // The gateway's own queries while the transaction is open: an API request, and the dispatcher's polls (every second).
    let listedAt = 0;
    let rolledBackAt = 0;
    let listing: Promise<{ status: number }> | undefined;
    await expect(
      client.begin(async (tx) => {
        await tx`insert into probe_orders (item) values ('rolled back')`;
        await tx`create table "TxnProbe" (x int)`;
        listing = request('GET', '/v2/outgoingWebhooks').then((response) => ((listedAt = Date.now()), response));
        await sleep(1500);
        rolledBackAt = Date.now();
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    const left = async () =>
      (
        await client`select to_regclass('"TxnProbe"')::text as probe, (select count(*)::int from probe_orders) as orders,
          (select count(*)::int from webhook_gateway.outbox) as changes, (select count(*)::int from webhook_gateway.messages) as messages`
      )[0];
    expect(await left()).toEqual({ probe: null, orders: 0, changes: 0, messages: 0 });
    expect(notices).toEqual([]); // no "there is no transaction in progress": the ROLLBACK found its transaction
    expect((await listing!).status).toBe(200);
    expect(listedAt).toBeGreaterThanOrEqual(rolledBackAt); // it waited for the transaction, not ran inside it

    // Two clients' extended queries do not interleave either (the Parse and Bind of one, the Execute of the other).
    const other = postgres(url, { max: 1, onnotice: () => {} });
    const values = (sql: postgres.Sql, tag: string) =>
      Promise.all(Array.from({ length: 50 }, (_, i) => sql.unsafe(`select $1::text || '${tag}' as value`, [i]).then(([row]) => row!.value)));
    const [ours, theirs] = await Promise.all([values(client, 'a'), values(other, 'b')]);
    await other.end();
    expect(ours).toEqual(Array.from({ length: 50 }, (_, i) => `${i}a`));
    expect(theirs).toEqual(Array.from({ length: 50 }, (_, i) => `${i}b`));

    // A client that goes away mid-transaction is rolled back, also while its BEGIN still waits for
    // a gateway transaction; the gateway goes on.
    const leaving = postgres(url, { max: 1, onnotice: () => {} });
    const reserved = await leaving.reserve();
    await reserved`begin`;
    await reserved`insert into probe_orders (item) values ('abandoned')`;
    await leaving.end({ timeout: 0 });
    const late = postgres(url, { max: 1, onnotice: () => {} });
    await late`select 1`;
    const held = gateway.database.db.transaction(() => sleep(500));
    const waited = late.begin((tx) => tx`insert into probe_orders (item) values ('never begun')`).catch(() => {});
    await sleep(100);
    await late.end({ timeout: 0 });
    await Promise.all([held, waited]);
    expect((await request('GET', '/v2/outgoingWebhooks')).status).toBe(200);
    expect(await left()).toEqual({ probe: null, orders: 0, changes: 0, messages: 0 });

    // A committed insert still becomes a message and a call, the only one.
    await client`insert into probe_orders (item) values ('kept')`;
    const call = await waitFor(async () => receiver.calls.find((received) => received.path === '/probe'), 20_000, 'the delivery');
    expect(JSON.parse(call.body).data).toMatchObject([{ item: 'kept' }]);
    expect(await left()).toMatchObject({ orders: 1, changes: 0, messages: 1 });

    // Left open at the stop, which would otherwise wait for it (the dispatcher's next poll does): the stop rolls it back.
    const open = await client.reserve();
    await open`begin`;
    await open`insert into probe_orders (item) values ('open at the stop')`;
  } finally {
    await gateway.stop();
    await client.end();
    await receiver.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

it('rolls back a client whose connection is reset while its BEGIN waits for a gateway transaction, once, and serves the gateway after', async () => {
  const { PGlite } = await import('@electric-sql/pglite');
  const { serveEmbedded } = await import('../src/db/embeddedServer');
  const net = await import('node:net');
  const pglite = await PGlite.create();
  const server = await serveEmbedded(pglite, 0);
  const [host, port] = server.address.split(':') as [string, string];
  const message = (type: string, body: Buffer) => {
    const header = Buffer.alloc(5);
    header.write(type);
    header.writeInt32BE(4 + body.length, 1);
    return Buffer.concat([header, body]);
  };
  const startup = () => {
    const parameters = Buffer.from('user\0postgres\0database\0postgres\0\0');
    const header = Buffer.alloc(8);
    header.writeInt32BE(8 + parameters.length, 0);
    header.writeInt32BE(196608, 4); // protocol 3.0
    return Buffer.concat([header, parameters]);
  };
  try {
    const socket = net.connect(Number(port), host);
    let answered = Buffer.alloc(0);
    socket.on('data', (data) => (answered = Buffer.concat([answered, data])));
    socket.on('error', () => {});
    await new Promise((resolve) => socket.on('connect', resolve));
    socket.write(startup());
    await waitFor(async () => (answered.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49])) ? true : undefined)); // ready, idle
    // The gateway's transaction holds the session; the client's BEGIN waits for it, and the
    // connection is reset meanwhile (the socket then says both 'error' and 'close').
    const held = pglite.transaction(async (tx) => {
      await tx.query('select 1');
      await new Promise((resolve) => setTimeout(resolve, 1000));
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.write(message('Q', Buffer.from('BEGIN\0')));
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.resetAndDestroy();
    await held;
    // Rolled back (an unhandled rejection of a cleared ROLLBACK would fail this test file), and the gateway's queries run outside any transaction.
    const result = await pglite.query<{ x: number }>('select 1 as x');
    expect(result.rows).toEqual([{ x: 1 }]);
    await waitFor(async () => (pglite.isInTransaction() ? undefined : true));
  } finally {
    await server.stop();
    await pglite.close();
  }
});
