import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';
import { openConnection } from './support/live';
import { waitFor } from './support/wait';

const LIMIT = 5;
const LIST = '/v2/outgoingWebhooks';
const QUERY = '{ outgoingWebhooks { id } }';

let first: TestGateway;
let second: TestGateway;

beforeAll(async () => {
  first = await startTestGateway({ API_RATE_LIMIT: String(LIMIT) });
  // A second API process on the same database: the limit is counted for both together.
  second = await startTestGateway({ API_RATE_LIMIT: String(LIMIT) }, first.databaseUrl);
});

afterAll(async () => {
  await second?.stop();
  await first?.stop();
});

const waitForConnected = (client: Client) => new Promise<void>((resolve) => client.on('connected', () => resolve()));

/** The limit counts per clock minute: start a test early enough in one that it ends in it. */
async function startOfAMinute(): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 15_000) await new Promise((resolve) => setTimeout(resolve, left + 50));
}

describe('API rate limit (API_RATE_LIMIT requests a minute per client profile)', () => {
  it('answers 429 in the contract shape with Retry-After once a client is over it, across processes', async () => {
    await startOfAMinute();
    const token = await first.token({ name: 'Busy Client', email: 'busy@acme.com' });
    const answers = [];
    for (let i = 0; i < LIMIT; i++) answers.push((await (i % 2 === 0 ? first : second).request('GET', LIST, { token })).status);
    expect(answers).toEqual(Array(LIMIT).fill(200));

    const refused = await first.request('GET', LIST, { token });
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({ Code: 'TooManyRequests', Resource: LIST });
    expect(refused.body.Message).toContain(`more than ${LIMIT} requests`);
    expect(refused.body.RequestId).toBe(refused.headers.get('x-request-id'));
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);

    // GraphQL over HTTP counts against the same limit.
    const graphql = await second.graphql(QUERY, {}, token);
    expect(graphql.status).toBe(429);
    expect(graphql.headers.get('retry-after')).toBeTruthy();
    expect(graphql.body.errors[0].extensions.code).toBe('TooManyRequests');

    // Another client is not held back.
    const other = await first.token({ name: 'Quiet Client', email: 'quiet@acme.com' });
    expect((await first.request('GET', LIST, { token: other })).status).toBe(200);
    const allowed = await second.graphql(QUERY, {}, other);
    expect(allowed.status).toBe(200);
    expect(allowed.body).toEqual({ data: { outgoingWebhooks: [] } });
  });

  it('counts WebSocket connections and operations too: over the limit an operation gets TooManyRequests, a connection 4429', async () => {
    await startOfAMinute();
    const token = await first.token({ name: 'Socket Client', email: 'socket@acme.com' });
    const { client } = openConnection(first.url, { Authorization: `Bearer ${token}` }); // 1 request
    try {
      for (let i = 0; i < LIMIT - 1; i++) {
        const result = await client.iterate({ query: QUERY }).next();
        expect(result.value?.data?.outgoingWebhooks).toEqual([]);
      }
      const refused = await client.iterate({ query: QUERY }).next().catch((errors: unknown) => ({ value: { errors } }));
      const [error] = refused.value!.errors as { message: string; extensions: { code: string } }[];
      expect(error!.extensions.code).toBe('TooManyRequests');
      expect(error!.message).toContain(`more than ${LIMIT} requests`);

      // A new connection (here to the other process) is refused while the client is over it.
      const late = openConnection(second.url, { Authorization: `Bearer ${token}` });
      const closed = await waitFor(async () => late.closed(), 10_000, 'the socket to close');
      expect(closed.code).toBe(4429);
      expect(closed.reason).toMatch(/^TooManyRequests: This client made more than 5 requests/);
      await late.client.dispose();
    } finally {
      await client.dispose();
    }
  });

  it('lets a client hold at most WS_MAX_CONNECTIONS_PER_CLIENT WebSocket connections to a process', async () => {
    const capped = await startTestGateway({ API_RATE_LIMIT: '0', WS_MAX_CONNECTIONS_PER_CLIENT: '2' }, first.databaseUrl);
    const connections: ReturnType<typeof openConnection>[] = [];
    try {
      const token = await capped.token({ name: 'Many Sockets', email: 'sockets@acme.com' });
      for (let i = 0; i < 2; i++) {
        const connection = openConnection(capped.url, { Authorization: `Bearer ${token}` });
        connections.push(connection);
        await waitForConnected(connection.client);
      }
      const third = openConnection(capped.url, { Authorization: `Bearer ${token}` });
      connections.push(third);
      const closed = await waitFor(async () => third.closed(), 10_000, 'the socket to close');
      expect(closed).toEqual({ code: 4429, reason: 'TooManyRequests: this client has 2 connections open here (WS_MAX_CONNECTIONS_PER_CLIENT)' });

      // Another client is not counted with it, and a closed connection frees its place.
      const other = openConnection(capped.url, { Authorization: `Bearer ${await capped.token({ name: 'Other Socket', email: 'other@acme.com' })}` });
      connections.push(other);
      await waitForConnected(other.client);
      await connections[0]!.client.dispose();
      const admitted = await waitFor(
        async () => {
          const again = openConnection(capped.url, { Authorization: `Bearer ${token}` });
          connections.push(again);
          const result = await again.client.iterate({ query: QUERY }).next().catch(() => undefined);
          return result?.value?.data ?? undefined;
        },
        10_000,
        'a place to free up',
      );
      expect(admitted.outgoingWebhooks).toBeInstanceOf(Array);
    } finally {
      await Promise.all(connections.map((connection) => connection.client.dispose()));
      await capped.stop();
    }
  });

  it('lets requests through while Redis is unreachable', async () => {
    const isolated = await startTestGateway({ API_RATE_LIMIT: '1', REDIS_URL: 'redis://127.0.0.1:1' });
    try {
      const token = await isolated.token();
      for (let i = 0; i < 3; i++) expect((await isolated.request('GET', LIST, { token })).status).toBe(200);
    } finally {
      await isolated.stop();
    }
  });

  it('refuses a bad API_RATE_LIMIT at start, naming it', async () => {
    await expect(startTestGateway({ API_RATE_LIMIT: 'many' })).rejects.toThrow(/API_RATE_LIMIT/);
  });
});
