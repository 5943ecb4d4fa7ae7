import postgres from 'postgres';
import { createBenchDatabase, formatRate, printTable, spawnGateway, startBenchGateway } from './support';

const SINGLE_ROW_INSERTS = 20_000;
const WRITERS = 8;
const BATCHES = 50;
const BATCH_ROWS = 1000;
const ROUNDS = 3;

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

/** Single-row INSERTs, each its own transaction, from several connections: an OLTP application. */
async function singleRowRate(app: postgres.Sql, table: string): Promise<number> {
  let next = 0;
  const seconds = await timed(() =>
    Promise.all(
      Array.from({ length: WRITERS }, async () => {
        while (next++ < SINGLE_ROW_INSERTS) {
          await app`insert into ${app(table)} (name, email, amount) values ('Customer', 'customer@example.com', 12.5)`;
        }
      }),
    ),
  );
  return SINGLE_ROW_INSERTS / seconds;
}

/** INSERT … SELECT of 1000 rows per statement: a bulk load. */
async function bulkRate(app: postgres.Sql, table: string): Promise<number> {
  const seconds = await timed(async () => {
    for (let batch = 0; batch < BATCHES; batch++) {
      await app`insert into ${app(table)} (name, email, amount)
        select 'Customer ' || n, 'c' || n || '@example.com', n from generate_series(1, ${BATCH_ROWS}) n`;
    }
  });
  return (BATCHES * BATCH_ROWS) / seconds;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/**
 * The capture trigger's cost on the user's write path: rows/s into a watched table against the
 * same table unwatched, measured alternately in one run; then how fast a dispatcher drains.
 */
export async function benchCapture(): Promise<void> {
  console.log('\n## Change capture: the cost of the trigger on the user\'s writes');
  const database = await createBenchDatabase();
  const api = await startBenchGateway(database.url, { ROLES: 'api' });
  const app = postgres(database.url, { max: WRITERS, onnotice: () => {} });
  try {
    for (const table of ['bench_unwatched', 'bench_watched']) {
      await app`create table ${app(table)} (id serial primary key, name text, email text, amount numeric, created_at timestamptz default now())`;
    }
    const webhook = await api.rest('POST', '/outgoingWebhooks', { Name: 'bench', OutgoingUrls: ['https://bench.example.com/hook'] });
    await api.rest('POST', `/outgoingWebhooks/${webhook.Id}/events`, { EventType: 'table.recordInsert', ObjectName: 'bench_watched' });

    // Deployed as it would be: a dispatcher process drains the outbox while the application writes.
    const dispatcher = await spawnGateway({ DATABASE_URL: database.url, ROLES: 'dispatcher' });
    const results: Record<string, number[]> = { singleUnwatched: [], singleWatched: [], bulkUnwatched: [], bulkWatched: [] };
    for (let round = 0; round < ROUNDS; round++) {
      results.singleUnwatched!.push(await singleRowRate(app, 'bench_unwatched'));
      results.singleWatched!.push(await singleRowRate(app, 'bench_watched'));
      results.bulkUnwatched!.push(await bulkRate(app, 'bench_unwatched'));
      results.bulkWatched!.push(await bulkRate(app, 'bench_watched'));
    }
    const single = [median(results.singleUnwatched!), median(results.singleWatched!)] as const;
    const bulk = [median(results.bulkUnwatched!), median(results.bulkWatched!)] as const;
    console.log('(a dispatcher process runs throughout, as deployed; median of alternating rounds)');
    printTable([
      ['workload', 'unwatched', 'watched', 'watched/unwatched', 'goal'],
      [`single-row inserts (${WRITERS} connections)`, formatRate(single[0]), formatRate(single[1]), (single[1] / single[0]).toFixed(2), '>= 0.70'],
      [`bulk inserts (${BATCH_ROWS} rows/statement)`, formatRate(bulk[0]), formatRate(bulk[1]), (bulk[1] / bulk[0]).toFixed(2), '>= 0.70'],
    ]);

    await dispatcher.stop();

    // With no dispatcher running, a backlog builds; then one dispatcher drains it.
    await bulkRate(app, 'bench_watched');
    await bulkRate(app, 'bench_watched');
    const [{ backlog }] = await app<[{ backlog: number }]>`select count(*)::int as backlog from webhook_gateway.outbox`;
    const drainer = await spawnGateway({ DATABASE_URL: database.url, ROLES: 'dispatcher' });
    const seconds = await timed(async () => {
      for (;;) {
        const [{ left }] = await app<[{ left: number }]>`select count(*)::int as left from webhook_gateway.outbox`;
        if (left === 0) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    });
    await drainer.stop();
    console.log(`dispatcher: ${backlog.toLocaleString('en-US')} captured changes turned into messages at ${formatRate(backlog / seconds)}`);
  } finally {
    await app.end();
    await api.stop();
    await database.drop();
  }
}
