import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './wait';

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A Redis server of the test's own, to stop and restart without disturbing other tests. It keeps
 * no data over a restart, except what `shutDownSaving` saves to its directory.
 */
export class PrivateRedis {
  private child: ChildProcess | undefined;
  private dir: string | undefined;
  constructor(readonly port: number) {}

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.dir ??= mkdtempSync(join(tmpdir(), 'gw-redis-'));
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir];
    this.child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitFor(async () => {
      const ping = spawnSync('redis-cli', ['-p', String(this.port), 'ping'], { encoding: 'utf8' });
      return ping.stdout.trim() === 'PONG' ? true : undefined;
    });
  }

  /** SIGKILL: Redis dies with all its data. */
  async kill(): Promise<void> {
    if (this.child && this.child.exitCode === null) {
      const exited = once(this.child, 'exit');
      this.child.kill('SIGKILL');
      await exited;
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }

  /** Stops Redis after saving its data, which the next start loads (a restart that keeps the queue). */
  async shutDownSaving(): Promise<void> {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = once(this.child, 'exit');
    spawnSync('redis-cli', ['-p', String(this.port), 'shutdown', 'save']);
    await exited;
  }
}

const postgresBin = () => {
  const version = readdirSync('/usr/lib/postgresql').sort().at(-1)!;
  return (tool: string) => `/usr/lib/postgresql/${version}/bin/${tool}`;
};

/** A PostgreSQL cluster of the test's own, run as the postgres user, to restart without disturbing other tests. */
export class PrivatePostgres {
  private readonly dir = mkdtempSync(join(tmpdir(), 'gw-pg-'));
  private readonly bin = postgresBin();
  constructor(
    readonly port: number,
    private readonly maxConnections = 100,
  ) {
    chmodSync(this.dir, 0o777);
  }

  get url() {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  private asPostgres(...args: string[]) {
    const result = spawnSync('su', ['postgres', '-s', '/bin/sh', '-c', args.join(' ')], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`${args.join(' ')}: ${result.stderr || result.stdout}`);
  }

  init(): void {
    this.asPostgres(this.bin('initdb'), '-D', `${this.dir}/data`, '-A', 'trust', '-U', 'postgres', '--no-sync', '>/dev/null');
  }

  start(): void {
    this.asPostgres(
      this.bin('pg_ctl'),
      '-D',
      `${this.dir}/data`,
      '-w',
      '-l',
      `${this.dir}/log`,
      '-o',
      `"-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=${this.maxConnections}"`,
      'start',
    );
  }

  /** Immediate shutdown: connections are cut as in a crash. */
  stop(): void {
    this.asPostgres(this.bin('pg_ctl'), '-D', `${this.dir}/data`, '-m', 'immediate', '-w', 'stop');
  }

  remove(): void {
    try {
      this.stop();
    } catch {
      // already stopped
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
