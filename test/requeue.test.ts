import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { createDeliveryQueue, deliveryJobId, requeueStale, type Handover } from '../src/delivery/queue';
import { StatusPublisher, statusChannel } from '../src/delivery/status';
import { Throttle } from '../src/delivery/throttle';
import { createLogger } from '../src/logger';
import { startTestGateway } from './support/gateway';
import { Receiver } from './support/receiver';
import { waitFor } from './support/wait';
import { createWatchedWebhook } from './support/watched';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

it('finds deliveries that lost their job (queued, and retries long overdue) behind a throttled backlog longer than a page', async () => {
  const prefix = `test-requeue-${randomBytes(4).toString('hex')}`;
  // A worker and no dispatcher: the only handover is the one this test makes.
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
  try {
    const token = await gw.token();
    const slow = await createWatchedWebhook(gw, token, app, { table: 'Backlog', urls: [`${receiver.url}/slow`], webhook: { CallThrottling: 1 } });
    const lost = await createWatchedWebhook(gw, token, app, { table: 'Lost', urls: [`${receiver.url}/lost`] });
    /** Deliveries as a dispatcher leaves them when it stops between its commit and its handover. */
    const orphans = async (webhook: Record<string, any>, path: string, count: number, state: { status: string; attempts: number }) => {
      const [event] = await app<[{ id: string }]>`select id from webhook_gateway.webhook_events where webhook_id = ${webhook.Id}`;
      return app<{ id: string }[]>`
        with made as (
          insert into webhook_gateway.messages (id, webhook_id, event_id, event_type, object_name, body, event_date)
          select gen_random_uuid(), ${webhook.Id}, ${event.id}, 'table.recordInsert', 'x', '{"n":' || n || '}', now()
          from generate_series(1, ${count}) n returning id)
        insert into webhook_gateway.deliveries (message_id, webhook_id, url, queued, status, attempts, next_attempt_at, updated_at)
        select id, ${webhook.Id}, ${`${receiver.url}${path}`}, true, ${state.status}, ${state.attempts}, now() - interval '5 minutes', now() - interval '5 minutes'
        from made order by id returning id`;
    };
    await orphans(slow, '/slow', 25, { status: 'QUEUED', attempts: 0 });
    const [queued] = await orphans(lost, '/lost', 1, { status: 'QUEUED', attempts: 0 });
    const [retry] = await orphans(lost, '/lost', 1, { status: 'RETRY_SCHEDULED', attempts: 1 });
    const jobOf = (id: string) => queue.queue.getJob(deliveryJobId(Number(id), 0));

    // Pages of 10, one page a check: the first check reaches only the backlog, and says where to go on.
    const pageOfTen = { pageSize: 10, pages: 1 };
    let from = await requeueStale(gw.gateway.database.db, handover, 120_000, 0, pageOfTen);
    expect(from).toBeGreaterThan(0);
    expect(await jobOf(queued!.id)).toBeUndefined();
    let checks = 1;
    while (from !== 0) {
      from = await requeueStale(gw.gateway.database.db, handover, 120_000, from, pageOfTen);
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
  } finally {
    await gw.stop();
    await queue.queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    redis.disconnect();
    await receiver.stop();
    await app.end();
  }
});
