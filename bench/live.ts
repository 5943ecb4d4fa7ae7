import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createClient, type Client } from 'graphql-ws';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { statusEvent, statusChannel, StatusPublisher } from '../src/delivery/status';
import { createLogger } from '../src/logger';
import { createBenchDatabase, formatRate, printTable, spawnGateway } from './support';

const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 1000);
const EVENTS = Number(process.env.BENCH_STATUS_EVENTS ?? 1000);
const BOOTSTRAP = { BOOTSTRAP_CLIENT_ID: 'bench-live-client', BOOTSTRAP_CLIENT_SECRET: 'bench-live-secret-0123456789' };
const CONNECT_WAVE = 100;
const SUBSCRIPTION = `subscription { deliveryStatus { messageId webhookId url attempt status httpStatus durationMs error nextAttemptAt at } }`;

async function metric(url: string, name: string): Promise<number> {
  const text = await fetch(`${url}/metrics`)
    .then((response) => response.text())
    .catch(() => '');
  const line = text.split('\n').find((entry) => entry.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

/** The process' resident memory now and at its peak so far, from the kernel (a busy process may not answer /metrics in time). */
async function residentMemory(pid: number): Promise<{ now: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kilobytes = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { now: kilobytes('VmRSS'), peak: kilobytes('VmHWM') };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`benchmark timed out waiting for ${what}`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`benchmark timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

interface Subscriber {
  client: Client;
  received: number;
  lastMessageId: string | undefined;
  done: () => void;
  finished: Promise<void>;
}

/**
 * `subscribers` graphql-ws clients on one API process; one burst of `events` status changes
 * published as workers publish them; the time until every subscriber has every change.
 */
async function fanOut(url: string, pid: number, token: string, redisPrefix: string, subscribers: number, events: number) {
  const clients: Subscriber[] = [];
  let connecting: Promise<void>[] = [];
  for (let i = 0; i < subscribers; i++) {
    // In waves, as clients arrive in practice: a thousand connects at once overflow the listen backlog.
    if (connecting.length === CONNECT_WAVE) {
      await within(Promise.all(connecting), 60_000, `subscriber connections (${i} so far)`);
      connecting = [];
    }
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    let connected!: () => void;
    connecting.push(new Promise<void>((resolve) => (connected = resolve)));
    const subscriber: Subscriber = {
      client: createClient({
        url: `${url.replace(/^http/, 'ws')}/graphql`,
        webSocketImpl: WebSocket,
        connectionParams: { Authorization: `Bearer ${token}` },
        on: { connected: () => connected(), error: (error) => console.error('subscriber connection error', (error as Error).message ?? error) },
      }),
      received: 0,
      lastMessageId: undefined,
      done,
      finished,
    };
    subscriber.client.subscribe<{ deliveryStatus: { messageId: string } }>(
      { query: SUBSCRIPTION },
      {
        next: (result) => {
          subscriber.received++;
          subscriber.lastMessageId = result.data?.deliveryStatus.messageId;
          if (subscriber.received === events) subscriber.done();
        },
        error: (error) => console.error('subscriber error', error),
        complete: () => {},
      },
    );
    clients.push(subscriber);
  }
  await within(Promise.all(connecting), 60_000, 'subscriber connections');
  await until(async () => (await metric(url, 'gateway_subscriptions_open')) >= subscribers, 120_000, 'subscriptions');
  const rssBefore = (await residentMemory(pid)).now;

  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const publisher = new StatusPublisher(redis, statusChannel(redisPrefix), createLogger('silent'));
  const started = performance.now();
  for (let start = 0; start < events; start += 100) {
    const burst = Array.from({ length: Math.min(100, events - start) }, (_, i) =>
      statusEvent({ messageId: `m${start + i}`, webhookId: 'bench', eventId: 'bench', url: 'https://receiver.example/hook' }, 'SUCCEEDED', 1, {
        httpStatus: 200,
        durationMs: 3,
      }),
    );
    await publisher.publishNow(burst);
  }
  await Promise.race([
    Promise.all(clients.map((client) => client.finished)),
    new Promise((resolve) => setTimeout(resolve, 300_000)),
  ]);
  const seconds = (performance.now() - started) / 1000;
  const { now: rssAfter, peak: rssPeak } = await residentMemory(pid);
  const complete = clients.filter((client) => client.received === events && client.lastMessageId === `m${events - 1}`).length;
  await Promise.all(clients.map((client) => client.client.dispose()));
  redis.disconnect();
  return { seconds, complete, rssBefore, rssPeak, rssAfter };
}

const mb = (bytes: number) => `${Math.round(bytes / 1024 / 1024)} MB`;

/** Live status fan-out: one subscriber (the baseline) and many on one API process, the same burst. */
export async function benchLive(): Promise<void> {
  console.log(`\n## Live status: a burst of ${EVENTS} status changes to ${SUBSCRIBERS} graphql-ws subscribers on one process`);
  const database = await createBenchDatabase();
  const redisPrefix = `bench-live-${randomUUID()}`;
  // Every subscriber is the same profile: the per-client limits are lifted to let them all connect.
  const limits = { API_RATE_LIMIT: '0', WS_MAX_CONNECTIONS_PER_CLIENT: String(SUBSCRIBERS) };
  const api = await spawnGateway({ DATABASE_URL: database.url, ROLES: 'api', REDIS_PREFIX: redisPrefix, ...limits, ...BOOTSTRAP });
  const url = /listening on (\S+)/.exec(api.output())![1]!;
  try {
    const token = (
      await (
        await fetch(`${url}/oauth/token`, {
          method: 'POST',
          body: new URLSearchParams({ grant_type: 'client_credentials', client_id: BOOTSTRAP.BOOTSTRAP_CLIENT_ID, client_secret: BOOTSTRAP.BOOTSTRAP_CLIENT_SECRET }),
        })
      ).json()
    ).access_token as string;
    const baseline = await fanOut(url, api.child.pid!, token, redisPrefix, 1, EVENTS);
    const many = await fanOut(url, api.child.pid!, token, redisPrefix, SUBSCRIBERS, EVENTS);
    const rate = (run: typeof many, subscribers: number) => (subscribers * EVENTS) / run.seconds;
    printTable([
      ['measure', '1 subscriber (baseline)', `${SUBSCRIBERS} subscribers`],
      ['subscribers with every change, in order', `${baseline.complete} of 1`, `${many.complete} of ${SUBSCRIBERS}`],
      ['time to fan out the burst', `${baseline.seconds.toFixed(2)} s`, `${many.seconds.toFixed(2)} s`],
      ['changes delivered to subscribers', formatRate(rate(baseline, 1)), formatRate(rate(many, SUBSCRIBERS))],
      ['API process RSS before -> after (peak since start)', `${mb(baseline.rssBefore)} -> ${mb(baseline.rssAfter)} (${mb(baseline.rssPeak)})`, `${mb(many.rssBefore)} -> ${mb(many.rssAfter)} (${mb(many.rssPeak)})`],
    ]);
    console.log(`ratio: ${(rate(many, SUBSCRIBERS) / rate(baseline, 1)).toFixed(1)}x the baseline's per-subscriber rate in total`);
  } catch (error) {
    console.error(api.output().slice(-3000));
    throw error;
  } finally {
    await api.stop();
    await database.drop();
  }
}
