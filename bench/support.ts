import { readdirSync, readFileSync } from 'node:fs';
import { loadConfig } from '../src/config';
import { startGateway, type Gateway } from '../src/gateway';
import { createLogger } from '../src/logger';

// Benchmarks make their databases as the tests do: on the local server, dropped afterwards.
export { createTestDatabase as createBenchDatabase } from '../test/support/gateway';
export { spawnGateway } from '../test/support/process';

const BOOTSTRAP = { id: 'bench-admin-client', secret: 'bench-admin-secret-0123456789' };

export interface BenchGateway {
  gateway: Gateway;
  databaseUrl: string;
  /** Calls the REST API as the bootstrap profile. */
  rest(method: string, path: string, body?: unknown): Promise<any>;
  stop(): Promise<void>;
}

export async function startBenchGateway(databaseUrl: string, env: Record<string, string> = {}): Promise<BenchGateway> {
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    PORT: '0',
    LOG_LEVEL: 'warn',
    ALLOW_PRIVATE_TARGETS: 'true',
    BOOTSTRAP_CLIENT_ID: BOOTSTRAP.id,
    BOOTSTRAP_CLIENT_SECRET: BOOTSTRAP.secret,
    ...env,
  });
  const gateway = await startGateway(config, createLogger('warn'));
  let token: string | undefined;
  async function rest(method: string, path: string, body?: unknown) {
    token ??= (
      await (
        await fetch(`${gateway.url}/oauth/token`, {
          method: 'POST',
          body: new URLSearchParams({ grant_type: 'client_credentials', client_id: BOOTSTRAP.id, client_secret: BOOTSTRAP.secret }),
        })
      ).json()
    ).access_token;
    const response = await fetch(`${gateway.url}/v2${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const result = response.status === 204 ? undefined : await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(result)}`);
    return result;
  }
  return { gateway, databaseUrl, rest, stop: () => gateway.stop() };
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
