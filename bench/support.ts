import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type postgres from 'postgres';
import { loadConfig } from '../src/config';
import { startGateway, type Gateway } from '../src/gateway';
import { createLogger } from '../src/logger';

// Benchmarks make their databases as the tests do: on the local server, dropped afterwards.
export { createTestDatabase as createBenchDatabase } from '../test/support/gateway';
export { spawnGateway, type GatewayProcess } from '../test/support/process';

const BOOTSTRAP = { id: 'bench-admin-client', secret: 'bench-admin-secret-0123456789' };

export interface BenchGateway {
  gateway: Gateway;
  databaseUrl: string;
  /** Calls the REST API as the bootstrap profile. */
  rest(method: string, path: string, body?: unknown): Promise<any>;
  stop(): Promise<void>;
}

/** The bootstrap profile's credentials, as environment for a gateway the benchmark starts. */
export const BOOTSTRAP_ENV = { BOOTSTRAP_CLIENT_ID: BOOTSTRAP.id, BOOTSTRAP_CLIENT_SECRET: BOOTSTRAP.secret };

/** Calls a gateway's REST API as the bootstrap profile (the token fetched on the first call). */
export function restClient(gatewayUrl: string): (method: string, path: string, body?: unknown) => Promise<any> {
  let token: string | undefined;
  return async (method, path, body) => {
    token ??= (
      await (
        await fetch(`${gatewayUrl}/oauth/token`, {
          method: 'POST',
          body: new URLSearchParams({ grant_type: 'client_credentials', client_id: BOOTSTRAP.id, client_secret: BOOTSTRAP.secret }),
        })
      ).json()
    ).access_token;
    const response = await fetch(`${gatewayUrl}/v2${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const result = response.status === 204 ? undefined : await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(result)}`);
    return result;
  };
}

export async function startBenchGateway(databaseUrl: string, env: Record<string, string> = {}): Promise<BenchGateway> {
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    PORT: '0',
    LOG_LEVEL: 'warn',
    ALLOW_PRIVATE_TARGETS: 'true',
    ...BOOTSTRAP_ENV,
    ...env,
  });
  const gateway = await startGateway(config, createLogger('warn'));
  return { gateway, databaseUrl, rest: restClient(gateway.url), stop: () => gateway.stop() };
}

export const formatRate = (perSecond: number) => `${Math.round(perSecond).toLocaleString('en-US')}/s`;

export function printTable(rows: (string | number)[][]): void {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => String(row[column]).length)));
  for (const row of rows) console.log(row.map((cell, column) => String(cell).padEnd(widths[column]!)).join('  '));
}

/** /proc counts CPU time in clock ticks, 100 a second on Linux whatever the kernel's own timer. */
const CLOCK_TICKS_PER_SECOND = 100;

/** The CPU time (user + system, seconds) the processes have used, from /proc; 0 where it cannot be read. */
export function cpuSecondsOf(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone, or no /proc (not Linux)
    }
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** The processes whose command name starts so (the Postgres server and its backends, Redis). */
export function pidsNamed(name: string): number[] {
  try {
    return readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .map(Number)
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith(name);
        } catch {
          return false;
        }
      });
  } catch {
    return [];
  }
}

/**
 * The Postgres server's processes that work for one database: its backends (their command line
 * reads `postgres: [<cluster>: ]<user> <database> <host>(<port>) …`) and the shared background
 * ones (checkpointer, WAL writer, …), not other databases' backends.
 */
export function postgresPidsFor(database: string): number[] {
  return pidsNamed('postgres').filter((pid) => {
    try {
      const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const backend = /^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])/.exec(title);
      return !backend || backend[1] === database;
    } catch {
      return false;
    }
  });
}

/** The benchmarks' webhook receiver (bench/receiver.ts), in a process of its own. */
export interface ReceiverProcess {
  url: string;
  pid: number;
  stats(latencies?: boolean): Promise<{ count: number; latencies?: number[] }>;
  reset(): Promise<void>;
  stop(): void;
}

export async function startReceiver(): Promise<ReceiverProcess> {
  const child = spawn('node', ['--import', 'tsx', 'bench/receiver.ts'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve) =>
    child.stdout.on('data', (chunk: Buffer) => {
      const match = /listening on (\S+)/.exec(chunk.toString());
      if (match) resolve(match[1]!);
    }),
  );
  return {
    url,
    pid: child.pid!,
    stats: async (latencies = false) => (await fetch(`${url}/stats${latencies ? '?latencies=1' : ''}`)).json(),
    reset: async () => void (await fetch(`${url}/reset`, { method: 'POST' })),
    stop: () => child.kill(),
  };
}

/** Polls `check` every 100 ms until it holds. */
export async function until(check: () => Promise<boolean>, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('benchmark timed out');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Processes by role, for where a row's CPU goes. */
export type CpuGroups = Record<string, () => number[]>;

/** Runs `run` and returns the CPU each group of processes used meanwhile, in µs per row. */
export async function cpuPerRow<T>(groups: CpuGroups, rows: number, run: () => Promise<T>): Promise<{ result: T; perRow: Record<string, number> }> {
  const pids = Object.fromEntries(Object.entries(groups).map(([name, list]) => [name, list()]));
  const used = () => Object.fromEntries(Object.entries(pids).map(([name, list]) => [name, cpuSecondsOf(list)]));
  const before = used();
  const result = await run();
  const after = used();
  return { result, perRow: Object.fromEntries(Object.keys(pids).map((name) => [name, ((after[name]! - before[name]!) / rows) * 1e6])) };
}

export const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/**
 * Inserts `rate` rows a second into `bench_orders` for `seconds`: a hundredth of them every 10
 * ms, each tick its own transaction, every row's `t0` the time its insert was sent and its `item`
 * the label given ('steady' by default: the delivery bench finds the measured rows by it).
 * Resolves with the receiver's commit-to-receipt latencies (ms, sorted) once every call arrived.
 */
export async function steadyLatencies(app: postgres.Sql, receiver: ReceiverProcess, rate: number, seconds: number, item = 'steady'): Promise<number[]> {
  if (rate % 100 !== 0) throw new Error(`steady rate ${rate}/s: a multiple of 100 (rows go every 10 ms)`);
  await receiver.reset();
  const perTick = rate / 100;
  const start = Date.now();
  for (let tick = 0; tick < seconds * 100; tick++) {
    const due = start + tick * 10;
    if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
    await app`insert into bench_orders (t0, item, amount) select ${String(Date.now())}, ${item}, n from generate_series(1, ${perTick}) n`;
  }
  await until(async () => (await receiver.stats()).count >= rate * seconds);
  return ((await receiver.stats(true)).latencies ?? []).sort((a, b) => a - b);
}
