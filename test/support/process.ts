import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export interface GatewayProcess {
  child: ChildProcess;
  /** Where it listens (every process serves /health, /ready and /metrics). */
  url: string;
  output(): string;
  /** SIGTERM, and wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL: a crash, nothing cleaned up. */
  kill(): Promise<void>;
}

/**
 * Runs `npm start`'s entry point in a process of its own (of the checkout in `cwd`, if given) and waits until it listens.
 * GATEWAY_NODE_FLAGS adds node flags to it (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile a benchmark).
 */
export async function spawnGateway(env: Record<string, string>, options: { cwd?: string } = {}): Promise<GatewayProcess> {
  const child = spawn('node', [...(process.env.GATEWAY_NODE_FLAGS?.split(' ') ?? []), '--import', 'tsx', 'src/main.ts'], {
    cwd: options.cwd,
    env: { ...process.env, PORT: '0', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  while (!output.includes('listening on')) {
    if (child.exitCode !== null) throw new Error(`gateway process exited: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const ended = once(child, 'exit');
  return {
    child,
    url: /listening on (\S+)/.exec(output)![1]!,
    output: () => output,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await ended;
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await ended;
    },
  };
}
