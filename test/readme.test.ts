import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { waitFor } from './support/wait';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

/** The fenced `sh` blocks under the README's heading `heading` (up to the next heading), in order. */
function shellBlocks(heading: string): string[] {
  const lines = readme.split('\n');
  const blocks: string[] = [];
  let inSection = false;
  let block: string[] | undefined;
  let fenced = false;
  for (const line of lines) {
    if (line.startsWith('```')) {
      if (fenced && block) blocks.push(block.join('\n'));
      block = !fenced && inSection && line === '```sh' ? [] : undefined;
      fenced = !fenced;
      continue;
    }
    if (fenced) {
      block?.push(line);
      continue;
    }
    if (line.startsWith('#')) {
      if (inSection) break;
      inSection = line === heading;
    }
  }
  if (blocks.length === 0) throw new Error(`no sh block under ${heading} in README.md`);
  return blocks;
}

/** Starts a command line the way a terminal would, in a process group of its own (so that it can be stopped whole). */
function startCommand(command: string, env: NodeJS.ProcessEnv): { child: ChildProcess; output(): string; stop(): Promise<void> } {
  const child = spawn('bash', ['-c', command], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const ended = once(child, 'exit');
  return {
    child,
    output: () => output,
    async stop() {
      // `npm start` does not pass SIGTERM on (README): the whole group gets it, as Ctrl-C would send it.
      if (child.exitCode === null) process.kill(-child.pid!, 'SIGTERM');
      await ended;
    },
  };
}

it(
  "runs the README's quick start as written: npm start on the embedded database, the curl and GraphQL examples, a table change reaching the README's receiver",
  async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gw-readme-'));
    // The README's commands run as a user's shell would, with no DATABASE_URL (the embedded default)
    // and the default ports; only the data directory and the queue's key prefix are this run's own.
    const env: NodeJS.ProcessEnv = { ...process.env, EMBEDDED_DB_DIR: dataDir, REDIS_PREFIX: `readme-${process.pid}-${Date.now()}`, LOG_LEVEL: 'warn' };
    delete env.DATABASE_URL;
    delete env.PORT;
    delete env.EMBEDDED_DB_PORT;

    const [curlBlock] = shellBlocks('### Try it with curl');
    const [graphqlBlock] = shellBlocks('### Try it with GraphQL');
    const [tableBlock, receiverBlock] = shellBlocks('### Fire a webhook from a table');
    // The receiver block: a receiver on port 9000 started in the background, then the gateway as
    // `ALLOW_PRIVATE_TARGETS=true npm start`; the table block, with the receiver's URL in place of
    // example.com's, as the README says.
    const [receiverCommand, gatewayCommand] = receiverBlock!.split(/ &\n/) as [string, string];
    expect(gatewayCommand.trim()).toMatch(/^ALLOW_PRIVATE_TARGETS=true npm start\b/);
    const receiver = startCommand(receiverCommand, env);
    const gateway = startCommand(gatewayCommand, env);
    try {
      await waitFor(
        async () => {
          if (gateway.child.exitCode !== null) throw new Error(`npm start exited: ${gateway.output()}`);
          return gateway.output().includes('listening on http://127.0.0.1:4000') ? true : undefined;
        },
        60_000,
        'npm start to listen on port 4000',
      );
      expect(gateway.output()).toContain(`Embedded database (${dataDir}) served at postgres://postgres@127.0.0.1:5433/postgres`);
      expect(gateway.output()).toMatch(/Created the first API client\. Keep these credentials; the secret is not shown again:\n {2}client_id: +\S+\n {2}client_secret: +\S+/);

      const receiverUrl = 'http://127.0.0.1:9000/hooks/customers';
      expect(readme).toContain(`use \`${receiverUrl}\` as the webhook's URL`);
      const script = [curlBlock, graphqlBlock, tableBlock!.replace('https://example.com/hooks/customers', receiverUrl)].join('\n');
      const { stdout } = await promisify(execFile)('bash', ['-e', '-o', 'pipefail', '-c', script], { env, cwd: process.cwd(), timeout: 90_000 });

      // Try it with curl: created (with its secret), listed under /integrations/rest/v3, read, updated, its secret regenerated, deleted.
      expect(stdout).toMatch(/\{"Id":"[^"]+","Name":"MyTestWebhook",[^}]*"CallThrottling":8,"Enabled":true,[^}]*"Secret":"whsec_/);
      expect(stdout).toMatch(/\{"Result":\[\{"Id":"[^"]+","Name":"MyTestWebhook"/);
      expect(stdout).toMatch(/"Name":"MyTestWebhook",[^}]*"CallThrottling":3,"Enabled":false/);
      expect(stdout).toContain('"CreatedBy":"John Doe (john.doe@acme.com)"');
      expect(stdout).toMatch(/\}204\n/); // curl -w's status after the regenerated webhook's JSON
      // Try it with GraphQL: the mutation and the list.
      expect(stdout).toMatch(/\{"data":\{"createOutgoingWebhook":\{"id":"[^"]+","name":"FromGraphQL","secret":"whsec_[^"]+","outgoingUrls":\["https:\/\/example.com\/hooks\/graphql"\],"callThrottling":5,"createdBy":"John Doe \(john.doe@acme.com\)"\}\}\}/);
      expect(stdout).toMatch(/\{"data":\{"outgoingWebhooks":\[[^\]]*"name":"FromGraphQL"/);
      expect(stdout).not.toContain('"errors"');
      // Fire a webhook from a table: psql's answers, the event created, the message listed.
      expect(stdout).toContain('CREATE TABLE');
      expect(stdout).toContain('INSERT 0 1');
      expect(stdout).toMatch(/\{"Id":"[^"]+","WebhookId":"[^"]+","Type":"table.recordInsert","Status":"Active","ObjectName":"MyCustomers"/);
      const messages = /\{"data":\{"messages":\{"edges":\[(.*)\]\}\}\}\s*$/.exec(stdout);
      expect(messages, stdout.slice(-500)).not.toBeNull();

      // The README's receiver prints the call: its webhook-id and the body with the inserted row.
      const printed = await waitFor(
        async () => /^(\S+) (\{.*"ann@example.com".*\})$/m.exec(receiver.output()) ?? undefined,
        20_000,
        'the receiver to print the call',
      );
      const body = JSON.parse(printed[2]!) as { eventType: string; data: Record<string, unknown>[] };
      expect(body.eventType).toBe('table.recordInsert');
      expect(body.data).toEqual([{ PK_ID: 1, Name: 'Ann', Email: 'ann@example.com' }]);
      // The listed message is the one received, if the query ran after the dispatcher made it (`sleep 2`).
      if (messages![1] !== '') expect(messages![1]).toContain(`"id":"${printed[1]}"`);
    } finally {
      await gateway.stop();
      if (receiver.child.exitCode === null) process.kill(-receiver.child.pid!, 'SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
  180_000,
);
