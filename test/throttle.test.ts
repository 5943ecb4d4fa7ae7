import postgres from 'postgres';
import { expect, it } from 'vitest';
import { startTestGateway } from './support/gateway';
import { spawnGateway, type GatewayProcess } from './support/process';
import { maxInWindow, Receiver } from './support/receiver';
import { waitFor } from './support/wait';

it('holds CallThrottling across two worker processes, in order, without slowing another webhook', { timeout: 90_000 }, async () => {
  const api = await startTestGateway({ ROLES: 'api,dispatcher', ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
  const receiver = await new Receiver().start();
  const workers: GatewayProcess[] = [];
  try {
    workers.push(
      ...(await Promise.all(
        [1, 2].map(() => spawnGateway({ DATABASE_URL: api.databaseUrl, ROLES: 'worker', ALLOW_PRIVATE_TARGETS: 'true' })),
      )),
    );
    const token = await api.token();
    const hooks: Record<string, string> = {};
    for (const [name, throttling] of [['Throttled', 5], ['Free', 0]] as const) {
      await app.unsafe(`create table "${name}" (id serial primary key)`);
      const hook = await api.request('POST', '/v2/outgoingWebhooks', {
        token,
        body: { Name: name, OutgoingUrls: [`${receiver.url}/${name}`], CallThrottling: throttling },
      });
      hooks[name] = hook.body.Id;
      await api.request('POST', `/v2/outgoingWebhooks/${hook.body.Id}/events`, {
        token,
        body: { EventType: 'table.recordInsert', ObjectName: name },
      });
    }

    await app`insert into "Throttled" select from generate_series(1, 60)`;
    await app`insert into "Free" select from generate_series(1, 20)`;
    await waitFor(async () => (receiver.callsTo('/Throttled').length >= 60 ? true : undefined), 60_000, '60 throttled calls');

    const throttled = receiver.callsTo('/Throttled');
    const free = receiver.callsTo('/Free');
    const times = throttled.map((call) => call.at);
    const span = (Math.max(...times) - Math.min(...times)) / 1000;
    console.log(`60 calls at CallThrottling 5 over ${span.toFixed(1)} s; at most ${maxInWindow(times)} in any second`);
    expect(throttled).toHaveLength(60);
    expect(maxInWindow(times)).toBeLessThanOrEqual(5);
    expect(span).toBeGreaterThanOrEqual(11); // 60 calls at 5 per second cannot take less

    // In order of creation: the rows' ids arrive ascending.
    const ids = throttled.map((call) => JSON.parse(call.body).data[0].id as number);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    // The other webhook was not held back: all its calls came before the throttled one was a quarter done.
    expect(free).toHaveLength(20);
    expect(Math.max(...free.map((call) => call.at))).toBeLessThan(times.sort((a, b) => a - b)[15]!);
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await receiver.stop();
    await app.end();
    await api.stop();
  }
});
