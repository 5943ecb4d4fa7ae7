import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { MAX_BUFFERED_EVENTS, StatusFeed, type FeedItem } from '../src/delivery/feed';
import { AppError } from '../src/errors';
import { statusEvent, StatusPublisher } from '../src/delivery/status';
import { createLogger } from '../src/logger';
import { createMetrics } from '../src/server/metrics';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const log = createLogger('silent');
const connections: Redis[] = [];
const connect = () => {
  const redis = new Redis(redisUrl);
  connections.push(redis);
  return redis;
};
afterEach(() => {
  for (const redis of connections.splice(0)) redis.disconnect();
});

const change = (index: number) =>
  statusEvent({ messageId: `m${index}`, webhookId: 'hook', eventId: 'event', url: 'https://receiver.example/' }, 'QUEUED', 1);

it('keeps up with a subscriber that reads, and cuts off one that falls too far behind', async () => {
  const channel = `test-feed-${randomUUID()}`;
  const metrics = createMetrics();
  const subscriber = connect();
  const feed = new StatusFeed(subscriber, channel, metrics, log);
  const publisher = new StatusPublisher(connect(), channel, log);

  const reader = await feed.open({});
  const idle = await feed.open({ webhookId: 'hook' });
  const elsewhere = await feed.open({ webhookId: 'another' });
  expect((await metrics.subscriptionsOpen.get()).values[0]!.value).toBe(3);

  const total = MAX_BUFFERED_EVENTS + 500;
  const read: FeedItem[] = [];
  const reading = (async () => {
    for await (const item of reader) {
      read.push(item);
      if (read.length === total) break;
    }
  })();
  for (let start = 0; start < total; start += 1000) {
    await publisher.publishNow(Array.from({ length: Math.min(1000, total - start) }, (_, i) => change(start + i)));
  }
  await reading;
  // Everything in order for the reader.
  expect(read.map((item) => (item instanceof AppError ? 'behind' : item.messageId))).toEqual(
    Array.from({ length: total }, (_, i) => `m${i}`),
  );

  // The one that never read was cut off: one notice instead of its backlog, then the end.
  await subscriber.ping(); // every message published before is in by now
  const notice = await idle.next();
  expect(notice.value).toBeInstanceOf(AppError);
  expect(notice.value).toMatchObject({ code: 'TooManyRequests', message: expect.stringContaining(`more than ${MAX_BUFFERED_EVENTS}`) });
  expect(await idle.next()).toEqual({ value: undefined, done: true });
  expect(feed.size).toBe(1); // the reader broke off (and left), the idle one was removed

  // A filter that matches nothing keeps nothing.
  await publisher.publishNow([change(0)]);
  await subscriber.ping();
  await elsewhere.return();
  expect(feed.size).toBe(0);
  expect((await metrics.subscriptionsOpen.get()).values[0]!.value).toBe(0);
});

it('ends a subscription with the reason once its access check fails, and rides out other failures', async () => {
  const channel = `test-feed-${randomUUID()}`;
  const feed = new StatusFeed(connect(), channel, createMetrics(), log);
  const publisher = new StatusPublisher(connect(), channel, log);
  const subscription = await feed.open({});
  let checks = 0;
  subscription.keepCheckingAccess(
    async () => {
      checks++;
      if (checks === 1) throw new Error('database away'); // not a verdict: checked again later
      if (checks === 3) throw new AppError('Unauthorized', 'The access token is invalid or expired');
    },
    1000,
    undefined,
  );
  await publisher.publishNow([change(1)]);
  expect(await subscription.next()).toMatchObject({ value: { messageId: 'm1' }, done: false });
  // Waiting for the next change when the third check turns the token away.
  const notice = await subscription.next();
  expect(checks).toBe(3);
  expect(notice.value).toMatchObject({ code: 'Unauthorized', message: 'The access token is invalid or expired' });
  expect(await subscription.next()).toEqual({ value: undefined, done: true });
  expect(feed.size).toBe(0);
});
