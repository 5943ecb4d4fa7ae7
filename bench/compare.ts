// `npm run bench -- compare [ref]`: this checkout's delivery path against another commit's (HEAD
// by default, so that uncommitted changes are what is measured). This machine's speed drifts by
// a third within minutes, so two separate runs cannot show a 5% change; here both run side by
// side, each a full stack (its own database, an API + dispatcher process and a worker process,
// from its own checkout) sharing one receiver, and take turns over rounds of the same rows, then
// over rounds of a steady 1,000 rows/s for the commit-to-receipt latency. Each round's figures are
// compared with the other side's next to it, and the medians printed.
import { execFileSync } from 'node:child_process';
import { rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import postgres from 'postgres';
import {
  BOOTSTRAP_ENV,
  cpuPerRow,
  createBenchDatabase,
  formatRate,
  percentile,
  pidsNamed,
  postgresPidsFor,
  printTable,
  restClient,
  spawnGateway,
  startReceiver,
  steadyLatencies,
  type GatewayProcess,
  until,
  type CpuGroups,
  type ReceiverProcess,
} from './support';

const ROUNDS = Number(process.env.BENCH_COMPARE_ROUNDS ?? 8);
const ROWS = 10_000;
const WARM_UP = 2000;
/** Rounds of commit-to-receipt latency at a steady rate, taking turns too: p99 swings with the machine as much as the rate does. */
const STEADY_ROUNDS = Number(process.env.BENCH_COMPARE_STEADY_ROUNDS ?? 8);
const STEADY_RATE = 1000;
const STEADY_SECONDS = 5;

interface Stack {
  groups: CpuGroups;
  /** Inserts `rows` rows into the watched table; resolves with the rate once every call arrived and every attempt is logged. */
  deliver(rows: number): Promise<number>;
  /** Commit-to-receipt latencies (ms, sorted) of `seconds` at `rate` rows a second. */
  steady(rate: number, seconds: number): Promise<number[]>;
  stop(): Promise<void>;
}

async function startStack(name: string, checkout: string, receiver: ReceiverProcess): Promise<Stack> {
  const database = await createBenchDatabase();
  const env = { DATABASE_URL: database.url, ALLOW_PRIVATE_TARGETS: 'true', CALL_THROTTLING_MAX: '100000', ...BOOTSTRAP_ENV };
  const app = postgres(database.url, { max: 4, onnotice: () => {} });
  const processes: GatewayProcess[] = [];
  const stop = async () => {
    await Promise.allSettled(processes.map((process) => process.stop()));
    await app.end();
    await database.drop();
  };
  try {
    processes.push(await spawnGateway({ ...env, ROLES: 'api,dispatcher' }, { cwd: checkout }));
    processes.push(await spawnGateway({ ...env, ROLES: 'worker' }, { cwd: checkout }));
    const rest = restClient(/listening on (\S+)/.exec(processes[0]!.output())![1]!);
    await app`create table bench_orders (id serial primary key, t0 text, item text, amount numeric)`;
    const webhook = await rest('POST', '/outgoingWebhooks', { Name: 'bench', OutgoingUrls: [`${receiver.url}/${name}`], CallThrottling: 100_000 });
    await rest('POST', `/outgoingWebhooks/${webhook.Id}/events`, { EventType: 'table.recordInsert', ObjectName: 'bench_orders' });
  } catch (error) {
    await stop();
    throw error;
  }
  const [front, worker] = processes as [GatewayProcess, GatewayProcess];
  const attempts = async () => (await app<[{ n: number }]>`select count(*)::int as n from webhook_gateway.delivery_attempts`)[0].n;
  return {
    groups: {
      worker: () => [worker.child.pid!],
      'API + dispatcher': () => [front.child.pid!],
      Postgres: () => postgresPidsFor(new URL(database.url).pathname.slice(1)),
      Redis: () => pidsNamed('redis-server'),
      receiver: () => [receiver.pid],
      bench: () => [process.pid],
    },
    async deliver(rows) {
      const logged = await attempts();
      await receiver.reset();
      const started = performance.now();
      for (let i = 0; i < rows; i += 1000) {
        await app`insert into bench_orders (t0, item, amount) select ${String(Date.now())}, 'item', n from generate_series(1, 1000) n`;
      }
      await until(async () => (await receiver.stats()).count >= rows);
      await until(async () => (await attempts()) >= logged + rows);
      return rows / ((performance.now() - started) / 1000);
    },
    async steady(rate, seconds) {
      const logged = await attempts();
      const latencies = await steadyLatencies(app, receiver, rate, seconds);
      // The attempts logged too, so that this side's work does not spill into the other's round.
      await until(async () => (await attempts()) >= logged + rate * seconds);
      return latencies;
    },
    stop,
  };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

type Round = { base: Record<string, number>; current: Record<string, number> };

/** Measures both stacks `rounds` times, each going first in every other round, so that a drift within a round favours neither. */
async function takeTurns(rounds: number, base: Stack, current: Stack, measure: (stack: Stack) => Promise<Record<string, number>>): Promise<Round[]> {
  const measured: Round[] = [];
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      const b = await measure(base);
      measured.push({ base: b, current: await measure(current) });
    } else {
      const c = await measure(current);
      measured.push({ base: await measure(base), current: c });
    }
  }
  return measured;
}

export async function benchCompare(ref = 'HEAD'): Promise<void> {
  const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: 'pipe' }).trim();
  const commit = git('rev-parse', '--verify', `${ref}^{commit}`);
  console.log(`\n## Compare: this checkout against ${ref} (${commit.slice(0, 12)}), ${ROUNDS} rounds of ${ROWS} rows each, taking turns`);
  const checkout = join(tmpdir(), `gateway-compare-${commit.slice(0, 12)}`);
  rmSync(checkout, { recursive: true, force: true });
  git('worktree', 'prune');
  git('worktree', 'add', '--detach', checkout, commit);
  let receiver: ReceiverProcess | undefined;
  const stacks: Stack[] = [];
  try {
    symlinkSync(resolve('node_modules'), join(checkout, 'node_modules'));
    receiver = await startReceiver();
    stacks.push(await startStack('base', checkout, receiver));
    stacks.push(await startStack('this', process.cwd(), receiver));
    const [base, current] = stacks as [Stack, Stack];
    for (const stack of stacks) await stack.deliver(WARM_UP); // compiled code, open connections
    const measure = async (stack: Stack) => {
      const { result, perRow } = await cpuPerRow(stack.groups, ROWS, () => stack.deliver(ROWS));
      return { ...perRow, total: Object.values(perRow).reduce((sum, value) => sum + value, 0), 'rows/s': result };
    };
    const rounds = await takeTurns(ROUNDS, base, current, measure);
    const latency = async (stack: Stack) => {
      const latencies = await stack.steady(STEADY_RATE, STEADY_SECONDS);
      return { 'p50 ms': percentile(latencies, 50), 'p99 ms': percentile(latencies, 99) };
    };
    const steadyRounds = await takeTurns(STEADY_ROUNDS, base, current, latency);
    const names = ['rows/s', 'total', ...Object.keys(base.groups)];
    const figure = (name: string, value: number) =>
      name === 'rows/s' ? formatRate(value) : name.endsWith(' ms') ? `${Math.round(value)} ms` : `${Math.round(value)} µs`;
    const compared = (measured: Round[], name: string) => {
      const ratios = measured.map((round) => round.current[name]! / round.base[name]!);
      return [
        name,
        figure(name, median(measured.map((round) => round.base[name]!))),
        figure(name, median(measured.map((round) => round.current[name]!))),
        median(ratios).toFixed(2),
        ratios.map((ratio) => ratio.toFixed(2)).join(' '),
      ];
    };
    printTable([
      ['per delivered row (CPU by process)', `${ref} (median)`, 'this (median)', 'this / base (median of rounds; CPU: below 1 is less)', 'rounds'],
      ...names.map((name) => compared(rounds, name)),
      ...(steadyRounds.length === 0
        ? []
        : [
            [`commit -> receipt at ${STEADY_RATE}/s (${STEADY_ROUNDS} rounds of ${STEADY_SECONDS} s)`, '', '', '', ''],
            ...['p50 ms', 'p99 ms'].map((name) => compared(steadyRounds, name)),
          ]),
    ]);
  } finally {
    await Promise.allSettled(stacks.map((stack) => stack.stop()));
    receiver?.stop();
    git('worktree', 'remove', '--force', checkout);
  }
}
