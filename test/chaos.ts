// `npm run chaos`: the "nothing is lost" promise under load, with faults one after another (not
// part of `npm test`: it takes minutes and a Postgres and a Redis of its own, which it kills).
// Rows go into three watched tables (one throttled, one multicast; every tenth transaction
// rolled back) while, every 7 s, worker or dispatcher processes are SIGKILLed and restarted,
// Redis is SIGKILLed (no persistence: its queue is lost) and restarted, or Postgres is stopped
// at once (`-m immediate`) and started again. Then it waits for the deliveries to finish and
// checks: every committed row reached every URL of its webhook, no rolled-back row reached any,
// every delivery SUCCEEDED, every success has its attempt recorded, and the throttled webhook
// never had more calls in a second than its CallThrottling. Exit code 0 only if all hold.
import { createServer } from 'node:http';
import postgres from 'postgres';
import { startTestGateway } from './support/gateway';
import { spawnGateway, type GatewayProcess } from './support/process';
import { maxInWindow } from './support/receiver';
import { PrivatePostgres, PrivateRedis } from './support/services';
import { createWatchedWebhook } from './support/watched';

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 120);
const PG_PORT = Number(process.env.CHAOS_PG_PORT ?? 5440);
const REDIS_PORT = Number(process.env.CHAOS_REDIS_PORT ?? 6390);
const FAULT_EVERY_MS = 7000;
const FAULTS = ['kill worker w1', 'kill dispatcher d1', 'redis', 'kill worker w2', 'postgres', 'kill both workers', 'kill dispatcher d2', 'kill both dispatchers'];
const SLOW_LIMIT = 20;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...parts: unknown[]) => console.log(new Date().toISOString().slice(11, 23), ...parts);

/** Answers 500 to one call in ten, 200 to the rest; counts the successful calls per URL path and row, and when they came. */
async function startReceiver() {
  const received = new Map<string, number>();
  const arrivals = new Map<string, number[]>();
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (Math.random() < 0.1) return response.writeHead(500).end();
      const path = request.url ?? '/';
      const key = `${path} ${JSON.parse(Buffer.concat(chunks).toString()).data[0].id}`;
      received.set(key, (received.get(key) ?? 0) + 1);
      const times = arrivals.get(path) ?? [];
      times.push(Date.now());
      arrivals.set(path, times);
      response.writeHead(200).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, received, arrivals, close: () => server.close() };
}

async function main(): Promise<boolean> {
  // Two dispatchers, two workers and the API, and the connections killed processes leave behind.
  const pg = new PrivatePostgres(PG_PORT, 300);
  const redis = new PrivateRedis(REDIS_PORT);
  pg.init();
  pg.start();
  await redis.start();
  const receiver = await startReceiver();
  const env = {
    DATABASE_URL: pg.url,
    REDIS_URL: redis.url,
    ALLOW_PRIVATE_TARGETS: 'true',
    // Enough attempts that one call in ten failing never makes a delivery DEAD.
    RETRY_SCHEDULE: '1s,1s,2s,2s,3s,3s,5s,5s,5s,5s,10s,10s',
  };
  // The API runs in this process (it makes the webhooks and is not killed); dispatchers and workers in processes of their own.
  const api = await startTestGateway({ ...env, ROLES: 'api' }, pg.url);
  const app = postgres(pg.url, { max: 4, onnotice: () => {} });
  const processes = new Map<string, GatewayProcess>();
  try {
    const token = await api.token();
    const tables = { Fast: ['/fast'], Slow: ['/slow'], Multi: ['/multi-a', '/multi-b'] } as const;
    for (const [table, paths] of Object.entries(tables)) {
      const webhook = table === 'Slow' ? { CallThrottling: SLOW_LIMIT } : {};
      await createWatchedWebhook(api, token, app, { table, urls: paths.map((path) => receiver.url + path), webhook });
    }

    const roles: Record<string, string> = { d1: 'dispatcher', d2: 'dispatcher', w1: 'worker', w2: 'worker' };
    const start = async (name: string) => {
      for (;;) {
        try {
          return void processes.set(name, await spawnGateway({ ...env, ROLES: roles[name]! }));
        } catch (error) {
          log(`${name} did not start, again in 1 s:`, String(error).slice(0, 200));
          await sleep(1000);
        }
      }
    };
    await Promise.all(Object.keys(roles).map(start));

    const load = { committed: 0, rolledBack: 0, refused: 0, running: true };
    const loading = (async () => {
      for (let n = 1; load.running; n++) {
        const table = (['Fast', 'Slow', 'Multi'] as const)[n % 3]!;
        const rollBack = n % 10 === 0;
        try {
          await app.begin(async (tx) => {
            await tx.unsafe(`insert into "${table}" (note) select '${rollBack ? 'rolled back' : 'ok'}' from generate_series(1, ${table === 'Slow' ? 1 : 5})`);
            if (rollBack) throw new Error('roll back');
          });
          load.committed++;
        } catch (error) {
          if (rollBack && (error as Error).message === 'roll back') load.rolledBack++;
          else load.refused++; // Postgres was down: nothing committed
        }
        await sleep(table === 'Slow' ? 40 : 15);
      }
    })();

    const until = Date.now() + SECONDS * 1000;
    for (let index = 0; Date.now() < until; index++) {
      await sleep(FAULT_EVERY_MS);
      const fault = FAULTS[index % FAULTS.length]!;
      log(fault, { transactions: load.committed, calls: [...receiver.received.values()].reduce((sum, count) => sum + count, 0) });
      if (fault === 'redis') {
        await redis.kill();
        await sleep(3000);
        await redis.start();
      } else if (fault === 'postgres') {
        pg.stop();
        await sleep(3000);
        pg.start();
      } else {
        const names = fault === 'kill both workers' ? ['w1', 'w2'] : fault === 'kill both dispatchers' ? ['d1', 'd2'] : [fault.split(' ').at(-1)!];
        await Promise.all(names.map((name) => processes.get(name)!.kill()));
        await sleep(2000);
        await Promise.all(names.map(start));
      }
    }
    load.running = false;
    await loading;
    log('load done', load);

    const expected = new Set<string>();
    let rolledBackRows = 0;
    for (const [table, paths] of Object.entries(tables)) {
      for (const row of await app.unsafe(`select id, note from "${table}"`)) {
        if (row.note !== 'ok') rolledBackRows++;
        for (const path of paths) expected.add(`${path} ${row.id}`);
      }
    }
    const unfinished = async () => (await app`select count(*)::int as n from webhook_gateway.deliveries where status <> 'SUCCEEDED'`)[0]!.n as number;
    const deadline = Date.now() + 300_000;
    let missing = [...expected].filter((key) => !receiver.received.has(key));
    while ((missing.length > 0 || (await unfinished()) > 0) && Date.now() < deadline) {
      log('waiting', { missing: missing.length, unfinished: await unfinished() });
      await sleep(5000);
      missing = [...expected].filter((key) => !receiver.received.has(key));
    }

    const [counts] = await app`select
        (select count(*)::int from webhook_gateway.messages) as messages,
        (select count(*)::int from webhook_gateway.deliveries) as deliveries,
        (select count(*)::int from webhook_gateway.deliveries where status <> 'SUCCEEDED') as "notSucceeded",
        (select count(*)::int from webhook_gateway.deliveries d where d.status = 'SUCCEEDED' and not exists (
           select 1 from webhook_gateway.delivery_attempts a where a.message_id = d.message_id and a.url = d.url and a.succeeded)) as "succeededUnrecorded",
        (select count(*)::int from webhook_gateway.delivery_attempts) as attempts`;
    const unexpected = [...receiver.received.keys()].filter((key) => !expected.has(key));
    const result = {
      rows: expected.size,
      missing: missing.length,
      unexpected: unexpected.length,
      rolledBackRows,
      callsTwice: [...receiver.received.values()].filter((count) => count > 1).length,
      ...counts,
      slowMostInASecond: maxInWindow(receiver.arrivals.get('/slow') ?? []),
    };
    log('result', result);
    const failures = [
      result.missing > 0 && `${result.missing} deliveries never reached their receiver (e.g. ${missing.slice(0, 3).join(', ')})`,
      result.unexpected > 0 && `${result.unexpected} calls for rows that were not committed`,
      rolledBackRows > 0 && `${rolledBackRows} rolled-back rows are in the tables`,
      counts!.deliveries !== expected.size && `${counts!.deliveries} deliveries for ${expected.size} row-URL pairs`,
      counts!.notSucceeded > 0 && `${counts!.notSucceeded} deliveries did not succeed`,
      counts!.succeededUnrecorded > 0 && `${counts!.succeededUnrecorded} successes without a recorded attempt`,
      result.slowMostInASecond > SLOW_LIMIT && `${result.slowMostInASecond} calls in one second at CallThrottling ${SLOW_LIMIT}`,
    ].filter(Boolean);
    for (const failure of failures) log('FAILED:', failure);
    if (failures.length === 0) log('passed: nothing lost, nothing extra, all recorded, the limit held');
    return failures.length === 0;
  } finally {
    await Promise.all([...processes.values()].map((child) => child.stop()));
    await app.end({ timeout: 5 });
    await api.gateway.stop();
    receiver.close();
    await redis.kill();
    pg.remove();
  }
}

main().then(
  (passed) => process.exit(passed ? 0 : 1),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
