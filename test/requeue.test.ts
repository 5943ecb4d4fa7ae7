import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { addDeliveryJobs, createDeliveryQueue, deliveryJobId, holdSweeps, queueDeliveries, requeueStale, type DeliveryToQueue, type Handover } from '../src/delivery/queue';
import { StatusPublisher, statusChannel } from '../src/delivery/status';
import { Throttle } from '../src/delivery/throttle';
import { createLogger } from '../src/logger';
import { startTestGateway } from './support/gateway';
import { Receiver } from './support/receiver';
import { waitFor } from './support/wait';
import { createWatchedWebhook } from './support/watched';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A gateway with a worker and no dispatcher (the only handover is the one a test makes), a
 * receiver, and deliveries made directly in Postgres, as a dispatcher leaves them.
 */
async function harness(run: (h: Awaited<ReturnType<typeof setUp>>) => Promise<void>) {
  const h = await setUp();
  try {
    await run(h);
  } finally {
    await h.gw.stop();
    await h.queue.queue.obliterate({ force: true }).catch(() => {});
    await h.queue.close();
    h.redis.disconnect();
    await h.receiver.stop();
    await h.app.end();
  }
}

async function setUp() {
  const prefix = `test-requeue-${randomBytes(4).toString('hex')}`;
  const gw = await startTestGateway({ ROLES: 'api,worker', ALLOW_PRIVATE_TARGETS: 'true', REDIS_PREFIX: prefix });
  const app = postgres(gw.databaseUrl, { max: 2, onnotice: () => {} });
  const receiver = await new Receiver().start();
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queue = createDeliveryQueue(REDIS_URL, prefix);
  const handover: Handover = {
    queue: queue.queue,
    throttle: new Throttle(redis, prefix),
    callThrottlingMax: 100,
    status: new StatusPublisher(redis, statusChannel(prefix), createLogger('silent')),
  };
  const token = await gw.token();
  let tables = 0;
  const webhook = (path: string, options: Record<string, unknown> = {}) =>
    createWatchedWebhook(gw, token, app, { table: `Requeue${++tables}`, urls: [`${receiver.url}${path}`], webhook: options });
  const deliveries = async (
    made: Record<string, any>,
    path: string,
    count: number,
    state: { status: string; attempts: number; queued: boolean },
  ) => {
    const [event] = await app<[{ id: string }]>`select id from webhook_gateway.webhook_events where webhook_id = ${made.Id}`;
    return app<{ id: string }[]>`
      with made as (
        insert into webhook_gateway.messages (id, webhook_id, event_id, event_type, object_name, body, event_date)
        select gen_random_uuid(), ${made.Id}, ${event.id}, 'table.recordInsert', 'x', '{"n":' || n || '}', now()
        from generate_series(1, ${count}) n returning id)
      insert into webhook_gateway.deliveries (message_id, webhook_id, url, queued, status, attempts, next_attempt_at, updated_at)
      select id, ${made.Id}, ${`${receiver.url}${path}`}, ${state.queued}, ${state.status}, ${state.attempts},
        now() - interval '5 minutes', now() - interval '5 minutes'
      from made order by id returning id`;
  };
  return { gw, app, receiver, redis, queue, handover, db: gw.gateway.database.db, webhook, deliveries };
}

it('delivers a delivery handed over twice once, its job carrying its ids and slot only, also when handed over again after its call', () =>
  harness(async ({ app, receiver, queue, handover, webhook, deliveries }) => {
    const made = await webhook('/handed-twice', {}); // unthrottled: its jobs are due at once
    const rows = await deliveries(made, '/handed-twice', 5, { status: 'QUEUED', attempts: 0, queued: true });
    const [event] = await app<[{ id: string }]>`select id from webhook_gateway.webhook_events where webhook_id = ${made.Id}`;
    const messageIds = await app<{ message_id: string }[]>`select message_id from webhook_gateway.deliveries where id in ${app(rows.map((row) => row.id))} order by id`;
    const toQueue: DeliveryToQueue[] = rows.map((row, index) => ({
      id: Number(row.id),
      generation: 0,
      attempts: 0,
      callThrottling: 100,
      throttleEpoch: 0,
      nextAttemptAt: new Date(),
      messageId: messageIds[index]!.message_id,
      webhookId: made.Id,
      eventId: event.id,
      url: `${receiver.url}/handed-twice`,
    }));
    // Twice at once (two dispatchers, or a handover retried after a lost answer), the queue paused
    // to look at the jobs: one per delivery, with ids and the throttle slot it booked, nothing else.
    await queue.queue.pause();
    await Promise.all([addDeliveryJobs(handover, toQueue), addDeliveryJobs(handover, toQueue)]);
    expect(await queue.queue.count()).toBe(5);
    const job = await queue.queue.getJob(deliveryJobId(toQueue[0]!.id, 0));
    expect(Object.keys(job!.data).sort()).toEqual(['deliveryId', 'generation', 'slot']);
    expect(job!.data).toMatchObject({ deliveryId: toQueue[0]!.id, generation: 0 });
    await queue.queue.resume();
    await waitFor(async () => {
      const done = await app`select 1 from webhook_gateway.deliveries where webhook_id = ${made.Id} and status = 'SUCCEEDED'`;
      return done.length === 5 ? true : undefined;
    });
    // Once more after the calls (the completed jobs are gone from Redis): the worker finds them done.
    await addDeliveryJobs(handover, toQueue);
    await waitFor(async () => {
      const counts = await queue.queue.getJobCounts('wait', 'delayed', 'prioritized', 'active');
      return Object.values(counts).every((count) => count === 0) ? true : undefined;
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const ids = receiver.callsTo('/handed-twice').map((call) => call.headers['webhook-id']);
    expect(ids.sort()).toEqual(messageIds.map((row) => row.message_id).sort());
    const [{ attempts }] = await app<[{ attempts: number }]>`select count(*)::int as attempts from webhook_gateway.delivery_attempts where webhook_id = ${made.Id}`;
    expect(attempts).toBe(5);
  }));

it('finds deliveries that lost their job (queued, and retries long overdue) behind a throttled backlog longer than a page', () =>
  harness(async ({ app, receiver, queue, handover, db, webhook, deliveries }) => {
    const slow = await webhook('/slow', { CallThrottling: 1 });
    const lost = await webhook('/lost');
    // Marked queued without a job: a dispatcher stopped between its commit and its handover.
    await deliveries(slow, '/slow', 25, { status: 'QUEUED', attempts: 0, queued: true });
    const [queued] = await deliveries(lost, '/lost', 1, { status: 'QUEUED', attempts: 0, queued: true });
    const [retry] = await deliveries(lost, '/lost', 1, { status: 'RETRY_SCHEDULED', attempts: 1, queued: true });
    const jobOf = (id: string) => queue.queue.getJob(deliveryJobId(Number(id), 0));

    // Pages of 10, one page a check: the first check reaches only the backlog, and says where to go on.
    const pageOfTen = { pageSize: 10, pages: 1 };
    let from = await requeueStale(db, handover, 120_000, 0, pageOfTen);
    expect(from).toBeGreaterThan(0);
    expect(await jobOf(queued!.id)).toBeUndefined();
    let checks = 1;
    while (from !== 0) {
      from = await requeueStale(db, handover, 120_000, from, pageOfTen);
      checks++;
    }
    expect(checks).toBe(3); // 27 deliveries: 10, 10, 7

    // Both lost deliveries are sent, the retry as its second attempt, however long the backlog takes.
    await waitFor(async () => (receiver.callsTo('/lost').length >= 2 ? true : undefined), 15_000, 'the lost deliveries to be sent');
    await waitFor(async () => {
      const rows = await app`select status from webhook_gateway.deliveries where id in (${queued!.id}, ${retry!.id})`;
      return rows.every((row) => row.status === 'SUCCEEDED') ? true : undefined;
    });
    const done = await app`select attempts from webhook_gateway.deliveries where id in (${queued!.id}, ${retry!.id}) order by id`;
    expect(done.map((row) => row.attempts)).toEqual([1, 2]);
  }));

it('hands each unqueued delivery over once when dispatchers sweep at the same time, booking one throttle slot each', () =>
  harness(async ({ app, receiver, handover, db, webhook, deliveries }) => {
    const throttled = await webhook('/swept', { CallThrottling: 2 });
    await deliveries(throttled, '/swept', 40, { status: 'QUEUED', attempts: 0, queued: false });
    // Three sweeps at once, as three dispatchers woken by one NOTIFY run them: one sweeps, the others find it busy (or nothing left).
    const handed = await Promise.all([1, 2, 3].map(() => queueDeliveries(db, handover, 1000)));
    expect(handed.reduce<number>((sum, count) => sum + (count === 'busy' ? 0 : count), 0)).toBe(40);
    const [{ unqueued }] = await app<[{ unqueued: number }]>`select count(*)::int as unqueued from webhook_gateway.deliveries where not queued`;
    expect(unqueued).toBe(0);
    // 40 slots at 2 a second: the last one about 22 s out (1.1/limit apart), not two or three times that.
    const [lastSlot] = await handover.throttle.reserveSlots([{ webhookId: throttled.Id, url: `${receiver.url}/swept`, limit: 2, epoch: 0 }]);
    expect(lastSlot!.at - Date.now()).toBeLessThan(30_000);
    expect(lastSlot!.at - Date.now()).toBeGreaterThan(15_000);
  }));

it('books a backlog longer than a page in id order when dispatchers sweep at the same time', { timeout: 60_000 }, () =>
  harness(async ({ queue, handover, db, webhook, deliveries }) => {
    const throttled = await webhook('/backlog', { CallThrottling: 2 });
    const made = await deliveries(throttled, '/backlog', 3000, { status: 'QUEUED', attempts: 0, queued: false });
    // Three dispatchers, each with its own Redis connection, sweep until nothing is left (as after a change of the limit).
    const prefix = (handover.throttle as unknown as { prefix: string }).prefix;
    const connections = [1, 2, 3].map(() => new Redis(REDIS_URL, { maxRetriesPerRequest: null }));
    try {
      let handed = 0;
      const sweep = async (throttle: Throttle) => {
        for (let round = 0; round < 500 && handed < 3000; round++) {
          const count = await queueDeliveries(db, { ...handover, throttle }, 1000);
          if (count === 'busy') await new Promise((resolve) => setTimeout(resolve, 5)); // another one sweeps
          else handed += count;
        }
      };
      await Promise.all(connections.map((connection) => sweep(new Throttle(connection, prefix))));
      expect(handed).toBe(3000);
    } finally {
      for (const connection of connections) connection.disconnect();
    }
    // Places in line follow the deliveries' order (the first, due at once, may be sent and gone already).
    const ids = made.map((row) => Number(row.id)).sort((a, b) => a - b);
    const jobs = await Promise.all(ids.map((id) => queue.queue.getJob(deliveryJobId(id, 0))));
    const misplaced = jobs.flatMap((job, index) => (job && job.data.slot!.ticket !== index + 1 ? [index] : []));
    expect(misplaced).toEqual([]);
    expect(jobs.filter((job) => job).length).toBeGreaterThanOrEqual(2990);
  }));

it('removes the jobs a change of the limit superseded, so that they do not wait out their old slots', () =>
  harness(async ({ app, gw, queue, handover, db, webhook, deliveries }) => {
    const throttled = await webhook('/changed', { CallThrottling: 1 });
    const made = await deliveries(throttled, '/changed', 30, { status: 'QUEUED', attempts: 0, queued: false });
    expect(await queueDeliveries(db, handover, 1000)).toBe(30);
    const ids = made.map((row) => Number(row.id));
    const waiting = async (generation: number) =>
      (await Promise.all(ids.map((id) => queue.queue.getJob(deliveryJobId(id, generation))))).filter((job) => job).length;
    // 30 slots at 1 a second: all but the first wait in the delayed set, for up to 33 s.
    expect(await waiting(0)).toBeGreaterThanOrEqual(29);

    const changed = await gw.request('PUT', `/v2/outgoingWebhooks/${throttled.Id}`, { token: await gw.token(), body: { CallThrottling: 50 } });
    expect(changed.status).toBe(200);
    const [{ unqueued }] = await app<[{ unqueued: number }]>`select count(*)::int as unqueued from webhook_gateway.deliveries where not queued`;
    expect(unqueued).toBeGreaterThanOrEqual(29);
    expect(await queueDeliveries(db, handover, 1000)).toBe(unqueued);
    // The old jobs are gone (one already running may finish by itself); the new ones go at 50 a second.
    expect(await waiting(0)).toBeLessThanOrEqual(1);
    await waitFor(async () => {
      const [{ done }] = await app<[{ done: number }]>`select count(*)::int as done from webhook_gateway.deliveries where status = 'SUCCEEDED'`;
      return done === 30 ? true : undefined;
    }, 10_000, 'the 30 deliveries at the new limit');
  }));

it("hands a webhook's few unqueued deliveries over in the first page, not behind another webhook's long backlog", () =>
  harness(async ({ app, receiver, handover, db, webhook, deliveries }) => {
    expect(await queueDeliveries(db, handover, 1000)).toBe(0); // nothing waiting yet
    const throttled = await webhook('/long', { CallThrottling: 1 });
    const long = await deliveries(throttled, '/long', 3000, { status: 'QUEUED', attempts: 0, queued: false });
    const other = await webhook('/few');
    const few = await deliveries(other, '/few', 5, { status: 'QUEUED', attempts: 0, queued: false });
    // One page of 1,000: an equal share each, 500 of the backlog and the other webhook's 5.
    expect(await queueDeliveries(db, handover, 1000)).toBe(505);
    const queued = async (rows: { id: string }[]) =>
      (await app<{ id: string }[]>`select id from webhook_gateway.deliveries where queued and id = any(${rows.map((row) => row.id)}::bigint[]) order by id`).map(
        (row) => Number(row.id),
      );
    expect(await queued(few)).toHaveLength(5);
    // The backlog's share is its oldest, so its order holds.
    const oldest = long.map((row) => Number(row.id)).sort((a, b) => a - b).slice(0, 500);
    expect(await queued(long)).toEqual(oldest);
    await waitFor(async () => (receiver.callsTo('/few').length === 5 ? true : undefined), 10_000, "the other webhook's 5 calls");
  }));

it('makes a change of the limit wait for a sweep in progress, and only a change of the limit', () =>
  harness(async ({ gw, db, webhook }) => {
    const hook = await webhook('/held', { CallThrottling: 1 });
    const token = await gw.token();
    // A sweep in progress holds the sweeps' lock until it commits; this transaction holds it as long as the test says.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    const sweep = db.transaction(async (tx) => {
      await holdSweeps(tx);
      holding();
      await released;
    });
    await held;
    try {
      const renamed = await gw.request('PUT', `/v2/outgoingWebhooks/${hook.Id}`, { token, body: { Name: 'Renamed while sweeping' } });
      expect(renamed.status).toBe(200);
      let done = false;
      const change = gw.request('PUT', `/v2/outgoingWebhooks/${hook.Id}`, { token, body: { CallThrottling: 5 } }).finally(() => (done = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(done).toBe(false); // it would unqueue deliveries the sweep may be claiming: it waits
      release();
      expect((await change).status).toBe(200);
    } finally {
      release();
      await sweep;
    }
  }));

it('takes waiting webhooks in turns, each one oldest first, when a page cannot hold them all', () =>
  harness(async ({ app, handover, db, webhook, deliveries }) => {
    const made: number[][] = [];
    for (const path of ['/a', '/b', '/c']) {
      const hook = await webhook(path, { CallThrottling: 1 });
      made.push((await deliveries(hook, path, 5, { status: 'QUEUED', attempts: 0, queued: false })).map((row) => Number(row.id)).sort((x, y) => x - y));
    }
    const [a, b, c] = made as [number[], number[], number[]];
    const queuedIds = async () =>
      (await app<{ id: string }[]>`select id from webhook_gateway.deliveries where queued order by id`).map((row) => Number(row.id));
    // Pages of 4 among 3 webhooks: each one's oldest, then the oldest of the second turn (a's, made first).
    expect(await queueDeliveries(db, handover, 4)).toBe(4);
    expect(await queuedIds()).toEqual([a[0], a[1], b[0], c[0]]);
    expect(await queueDeliveries(db, handover, 4)).toBe(4);
    expect(await queuedIds()).toEqual([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1]]);
    // Until none waits: 15 in all, each webhook's in id order.
    let handed = 8;
    for (let count = await queueDeliveries(db, handover, 4); count !== 0; count = await queueDeliveries(db, handover, 4)) handed += Number(count);
    expect(handed).toBe(15);
    expect(await queuedIds()).toEqual([...a, ...b, ...c]);
  }));
