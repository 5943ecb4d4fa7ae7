import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { expect, it } from 'vitest';
import { createTestDatabase } from './support/gateway';
import { spawnGateway } from './support/process';
import { waitFor } from './support/wait';

it('starts as a process, prints where it listens and the first credentials, and stops cleanly on SIGTERM', async () => {
  const database = await createTestDatabase();
  const child = spawn('node', ['--import', 'tsx', 'src/main.ts'], {
    env: { ...process.env, DATABASE_URL: database.url, PORT: '0', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    let output = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (output += chunk));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    while (!/client_secret: \S+/.test(output)) {
      if (child.exitCode !== null) throw new Error(`exited early:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const url = /listening on (http:\/\/\S+)/.exec(output)![1]!;
    const clientId = /client_id: +(\S+)/.exec(output)![1]!;
    const clientSecret = /client_secret: +(\S+)/.exec(output)![1]!;

    const token = await fetch(`${url}/oauth/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
    });
    expect(token.status).toBe(200);

    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(output).not.toMatch(/"level":(40|50|60)/); // no warning, error or fatal log lines
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await database.drop();
  }
});

it('stops on SIGTERM while a client stalls in the middle of a request: its connection is closed after a grace', { timeout: 60_000 }, async () => {
  const database = await createTestDatabase();
  const gateway = await spawnGateway({ DATABASE_URL: database.url });
  try {
    const { port } = new URL(/listening on (http:\/\/\S+)/.exec(gateway.output())![1]!);
    // Headers complete, the body promised and never sent: the request stays in flight. The
    // server's "100 Continue" says it took the request up (an idle connection would just be closed).
    const client = connect(Number(port), '127.0.0.1');
    client.on('error', () => {});
    const closed = once(client, 'close');
    await once(client, 'connect');
    let answer = '';
    client.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    client.write('POST /oauth/token HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n');
    await waitFor(async () => (answer.includes('100 Continue') ? true : undefined), 5000, 'the server to take the request up');
    client.write('grant_type=');

    gateway.child.kill('SIGTERM');
    const [code] = await once(gateway.child, 'exit');
    // Before the grace, the process waited for the request until its hard deadline and exited with 1.
    expect(code).toBe(0);
    await closed;
  } finally {
    await gateway.kill();
    await database.drop();
  }
});

it('refuses to start on a bad configuration value, naming the variable, without a stack trace', async () => {
  const child = spawn('node', ['--import', 'tsx', 'src/main.ts'], {
    // A database URL nothing answers on: should the value pass, no database is touched.
    env: { ...process.env, PORT: 'eighty', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code] = await once(child, 'exit');
  expect(code).not.toBe(0);
  expect(output).toMatch(/PORT/);
  expect(output).not.toMatch(/^\s+at /m);
  expect(output).not.toMatch(/listening on/);
});
