import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DELIVERY_QUEUE } from '../src/delivery/queue';
import { createTestDatabase, startTestGateway } from './support/gateway';
import { spawnGateway, type GatewayProcess } from './support/process';
import { Receiver } from './support/receiver';
import { freePort, PrivatePostgres, PrivateRedis } from './support/services';
import { waitFor } from './support/wait';

let receiver: Receiver;
beforeAll(async () => {
  receiver = await new Receiver().start();
});
afterAll(() => receiver?.stop());

/** A table and a webhook on it whose URL is `path` at the test receiver. */
async function watch(gatewayUrl: string, token: string, app: postgres.Sql, name: string, path: string) {
  await app.unsafe(`create table "${name}" (id serial primary key)`);
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const hook = await (
    await fetch(`${gatewayUrl}/v2/outgoingWebhooks`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ Name: name, OutgoingUrls: [`${receiver.url}${path}`] }),
    })
  ).json();
  await fetch(`${gatewayUrl}/v2/outgoingWebhooks/${hook.Id}/events`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ EventType: 'table.recordInsert', ObjectName: name }),
  });
}

async function allSucceeded(app: postgres.Sql, count: number, timeoutMs: number) {
  await waitFor(
    async () => {
      const [row] = await app<[{ n: number }]>`select count(*)::int as n from webhook_gateway.messages m
        where (select bool_and(d.status = 'SUCCEEDED') from webhook_gateway.deliveries d where d.message_id = m.id)`.catch(
        () => [{ n: -1 }] as [{ n: number }],
      );
      return row.n === count ? true : undefined;
    },
    timeoutMs,
    `${count} delivered messages`,
  );
}

/** The address of a gateway process started on an empty database, and a token from the client it printed. */
async function signIn(gateway: GatewayProcess): Promise<{ url: string; token: string }> {
  const url = /listening on (\S+)/.exec(gateway.output())![1]!;
  const answer = await fetch(`${url}/oauth/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: /client_id: +(\S+)/.exec(gateway.output())![1]!,
      client_secret: /client_secret: +(\S+)/.exec(gateway.output())![1]!,
    }),
  });
  return { url, token: ((await answer.json()) as { access_token: string }).access_token };
}

const receivedIds = (path: string) => new Set(receiver.callsTo(path).map((call) => JSON.parse(call.body).data[0].id as number));

describe('faults', () => {
  it('delivers everything after the worker process is killed mid-delivery', { timeout: 90_000 }, async () => {
    const env = { ALLOW_PRIVATE_TARGETS: 'true', DELIVERY_TIMEOUT_MS: '3000' };
    const api = await startTestGateway({ ...env, ROLES: 'api,dispatcher' });
    const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
    let worker = await spawnGateway({ ...env, DATABASE_URL: api.databaseUrl, ROLES: 'worker' });
    try {
      receiver.answer('/crash', { status: 200, delayMs: 1500 });
      await watch(api.url, await api.token(), app, 'Crash', '/crash');
      await app`insert into "Crash" select from generate_series(1, 10)`;
      await waitFor(async () => (receiver.callsTo('/crash').length > 0 ? true : undefined));
      const killed = worker;
      await killed.kill(); // calls in flight (answered 1.5 s after they arrive), nothing recorded for them
      expect(killed.child.signalCode).toBe('SIGKILL');
      const [{ recorded }] = await app<[{ recorded: number }]>`select count(*)::int as recorded from webhook_gateway.delivery_attempts`;
      expect(recorded).toBe(0);
      const callsBeforeTheKill = receiver.callsTo('/crash').length;
      worker = await spawnGateway({ ...env, DATABASE_URL: api.databaseUrl, ROLES: 'worker' });
      await allSucceeded(app, 10, 60_000);
      expect(receivedIds('/crash').size).toBe(10);
      // At least once: the calls the kill cut off were made again.
      expect(receiver.callsTo('/crash').length).toBeGreaterThanOrEqual(10 + callsBeforeTheKill);
    } finally {
      await worker.stop();
      await app.end();
      await api.stop();
    }
  });

  it('finishes the calls in flight when the worker is stopped (SIGTERM), records them, and leaves no job behind', { timeout: 60_000 }, async () => {
    const env = { ALLOW_PRIVATE_TARGETS: 'true', DELIVERY_TIMEOUT_MS: '5000' };
    const api = await startTestGateway({ ...env, ROLES: 'api,dispatcher' });
    const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
    const worker = await spawnGateway({ ...env, DATABASE_URL: api.databaseUrl, ROLES: 'worker' });
    const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
    try {
      receiver.answer('/graceful', { status: 200, delayMs: 1500 });
      await watch(api.url, await api.token(), app, 'Graceful', '/graceful');
      await app`insert into "Graceful" select from generate_series(1, 3)`;
      await waitFor(async () => (receiver.callsTo('/graceful').length === 3 ? true : undefined));
      await worker.stop(); // while the receiver holds all three answers back
      expect(worker.child.exitCode).toBe(0);
      // Recorded before the process exited: one successful attempt each.
      const states = await app`select status, attempts from webhook_gateway.deliveries`;
      expect(states).toEqual(Array.from({ length: 3 }, () => ({ status: 'SUCCEEDED', attempts: 1 })));
      const [{ succeeded }] = await app<[{ succeeded: number }]>`select count(*)::int as succeeded from webhook_gateway.delivery_attempts where succeeded`;
      expect(succeeded).toBe(3);
      // Nothing left in Redis to be called again by the next worker.
      const [{ id }] = await app<[{ id: string }]>`select id from webhook_gateway.installation`;
      const queue = new Queue(DELIVERY_QUEUE, { connection: redis, prefix: `webhook-gateway:${id}` });
      expect(await queue.getJobCounts('active', 'waiting', 'delayed', 'prioritized')).toEqual({ active: 0, waiting: 0, delayed: 0, prioritized: 0 });
      await queue.close();
      expect(receiver.callsTo('/graceful')).toHaveLength(3);
    } finally {
      redis.disconnect();
      await worker.stop();
      await app.end();
      await api.stop();
    }
  });

  it('loses nothing when Redis restarts empty, with jobs waiting in it and changes made while it is down', { timeout: 90_000 }, async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const gw = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true', REDIS_URL: redis.url, RETRY_SCHEDULE: '2s' });
    const app = postgres(gw.databaseUrl, { max: 2, onnotice: () => {} });
    try {
      await watch(gw.url, await gw.token(), app, 'Flaky', '/redis');
      receiver.script('/redis', { status: 500 }, { status: 500 }, { status: 500 });
      await app`insert into "Flaky" select from generate_series(1, 3)`;
      await waitFor(async () => (receiver.callsTo('/redis').length >= 3 ? true : undefined));
      await redis.kill(); // the three retries waiting in Redis are gone with it
      await app`insert into "Flaky" select from generate_series(1, 3)`;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await redis.start();
      await allSucceeded(app, 6, 60_000);
      expect(receivedIds('/redis').size).toBe(6);
    } finally {
      await app.end();
      await gw.stop();
      await redis.kill();
    }
  });

  it('keeps what is made while Redis is down in Postgres, through a restart of the gateway, and hands it over once when Redis is back with its data', { timeout: 90_000 }, async () => {
    const redis = new PrivateRedis(await freePort());
    const database = await createTestDatabase(); // outlives the first gateway
    const cleanUps: (() => Promise<unknown>)[] = [() => database.drop(), () => redis.kill()];
    try {
      await redis.start();
      const env = { ALLOW_PRIVATE_TARGETS: 'true', REDIS_URL: redis.url };
      let gw = await startTestGateway(env, database.url);
      cleanUps.unshift(() => gw.stop());
      const app = postgres(database.url, { max: 2, onnotice: () => {} });
      cleanUps.unshift(() => app.end());
      await watch(gw.url, await gw.token(), app, 'Paused', '/paused');
      await app`insert into "Paused" select from generate_series(1, 3)`;
      await allSucceeded(app, 3, 30_000);
      const [{ id }] = await app<[{ id: string }]>`select id from webhook_gateway.installation`;
      const marker = `webhook-gateway:${id}:${DELIVERY_QUEUE}:gateway-epoch`; // remade, with a new time, when Redis comes back empty
      const readMarker = async () => {
        const check = new Redis(redis.url);
        try {
          return await check.get(marker);
        } finally {
          check.disconnect();
        }
      };
      const markedBefore = await readMarker();
      expect(markedBefore).not.toBeNull();
      await redis.shutDownSaving();
      await app`insert into "Paused" select from generate_series(1, 3)`;
      // The messages are made, their deliveries wait in Postgres, not handed over.
      await waitFor(async () => {
        const [row] = await app<[{ n: number }]>`select count(*)::int as n from webhook_gateway.deliveries where not queued`;
        return row.n === 3 ? true : undefined;
      });
      // The gateway restarts meanwhile: nothing was waiting in its memory.
      await gw.stop();
      gw = await startTestGateway(env, database.url);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(receiver.callsTo('/paused')).toHaveLength(3);
      await redis.start(); // with its data: the queue is not rebuilt, the waiting deliveries are handed over
      await allSucceeded(app, 6, 60_000);
      expect(await readMarker()).toBe(markedBefore); // it kept its data
      await new Promise((resolve) => setTimeout(resolve, 500)); // a duplicate would come about now
      expect(receivedIds('/paused').size).toBe(6);
      expect(receiver.callsTo('/paused')).toHaveLength(6); // each once
    } finally {
      for (const cleanUp of cleanUps) await cleanUp().catch(() => {});
    }
  });

  it('loses nothing when Postgres restarts during deliveries', { timeout: 90_000 }, async () => {
    const pg = new PrivatePostgres(await freePort());
    pg.init();
    pg.start();
    const gateway = await spawnGateway({ DATABASE_URL: pg.url, ALLOW_PRIVATE_TARGETS: 'true' });
    const app = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      const { url, token } = await signIn(gateway);
      receiver.answer('/pg', { status: 200, delayMs: 1000 });
      await watch(url, token, app, 'Outage', '/pg');
      await app`insert into "Outage" select from generate_series(1, 5)`;
      await waitFor(async () => (receiver.callsTo('/pg').length > 0 ? true : undefined));
      pg.stop(); // while calls are in flight: their results cannot be recorded yet
      await new Promise((resolve) => setTimeout(resolve, 1500));
      pg.start();
      await waitFor(async () => ((await app`select 1`.catch(() => undefined)) ? true : undefined));
      await app`insert into "Outage" select from generate_series(1, 5)`;
      await allSucceeded(app, 10, 60_000);
      expect(receivedIds('/pg').size).toBe(10);
      // The calls answered during the outage were recorded once Postgres was back, not made again.
      expect(receiver.callsTo('/pg')).toHaveLength(10);
      const [{ attempts }] = await app<[{ attempts: number }]>`select count(*)::int as attempts from webhook_gateway.delivery_attempts`;
      expect(attempts).toBe(10);
      expect(gateway.child.exitCode).toBeNull(); // the outage did not end the process
    } finally {
      await app.end().catch(() => undefined);
      await gateway.stop();
      pg.remove();
    }
  });

  it('gives up the attempts it holds for Postgres when stopped during an outage, and they are made again', { timeout: 90_000 }, async () => {
    const pg = new PrivatePostgres(await freePort());
    pg.init();
    pg.start();
    const env = { DATABASE_URL: pg.url, ALLOW_PRIVATE_TARGETS: 'true', DELIVERY_TIMEOUT_MS: '2000' };
    let gateway = await spawnGateway(env);
    const app = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      const { url, token } = await signIn(gateway);
      receiver.answer('/held', { status: 200, delayMs: 1000 });
      await watch(url, token, app, 'Held', '/held');
      await app`insert into "Held" select from generate_series(1, 3)`;
      await waitFor(async () => (receiver.callsTo('/held').length === 3 ? true : undefined));
      pg.stop(); // the calls are answered while Postgres is away: their attempts are held
      await new Promise((resolve) => setTimeout(resolve, 2000));
      // A stop waits its grace (the delivery timeout and 5 s) for them, then gives them up and ends
      // cleanly, before the process' own deadline (the delivery timeout and 15 s) would end it.
      await gateway.stop();
      expect(gateway.child.exitCode).toBe(0);
      expect(gateway.output()).not.toContain('shutdown took too long');
      pg.start();
      await waitFor(async () => ((await app`select 1`.catch(() => undefined)) ? true : undefined));
      gateway = await spawnGateway(env);
      await allSucceeded(app, 3, 60_000);
      // Nothing lost: each message went again, and the calls made again are recorded.
      expect(receivedIds('/held').size).toBe(3);
      expect(receiver.callsTo('/held')).toHaveLength(6);
      const [{ attempts }] = await app<[{ attempts: number }]>`select count(*)::int as attempts from webhook_gateway.delivery_attempts`;
      expect(attempts).toBe(3);
    } finally {
      await app.end().catch(() => undefined);
      await gateway.stop();
      pg.remove();
    }
  });
});
