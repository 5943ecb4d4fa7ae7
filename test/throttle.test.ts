import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { Throttle, type Slot } from '../src/delivery/throttle';
import { deleteKeys, startTestGateway } from './support/gateway';
import { spawnGateway, type GatewayProcess } from './support/process';
import { maxInWindow, Receiver } from './support/receiver';
import { waitFor } from './support/wait';
import { createWatchedWebhook } from './support/watched';

it('holds CallThrottling across two worker processes, in order, without slowing another webhook', { timeout: 90_000 }, async () => {
  const api = await startTestGateway({ ROLES: 'api,dispatcher', ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
  const receiver = await new Receiver().start();
  const workers: GatewayProcess[] = [];
  try {
    workers.push(
      ...(await Promise.all(
        [1, 2].map(() => spawnGateway({ DATABASE_URL: api.databaseUrl, ROLES: 'worker', ALLOW_PRIVATE_TARGETS: 'true' })),
      )),
    );
    const token = await api.token();
    const hooks: Record<string, string> = {};
    for (const [name, throttling] of [['Throttled', 5], ['Free', 0], ['Brisk', 25]] as const) {
      const hook = await createWatchedWebhook(api, token, app, { table: name, urls: [`${receiver.url}/${name}`], webhook: { CallThrottling: throttling } });
      hooks[name] = hook.Id;
    }

    await app`insert into "Throttled" select from generate_series(1, 60)`;
    await app`insert into "Free" select from generate_series(1, 20)`;
    await app`insert into "Brisk" select from generate_series(1, 150)`;
    await waitFor(async () => (receiver.callsTo('/Throttled').length >= 60 ? true : undefined), 60_000, '60 throttled calls');
    await waitFor(async () => (receiver.callsTo('/Brisk').length >= 150 ? true : undefined), 30_000, '150 brisk calls');

    const throttled = receiver.callsTo('/Throttled');
    const free = receiver.callsTo('/Free');
    const times = throttled.map((call) => call.at);
    const span = (Math.max(...times) - Math.min(...times)) / 1000;
    const sorted = [...times].sort((a, b) => a - b);
    const closestSix = Math.min(...sorted.slice(5).map((at, index) => at - sorted[index]!));
    console.log(`60 calls at CallThrottling 5 over ${span.toFixed(1)} s; at most ${maxInWindow(times)} in any second; the closest six within ${closestSix} ms`);
    expect(throttled).toHaveLength(60);
    expect(maxInWindow(times)).toBeLessThanOrEqual(5);
    // 60 calls at 5 per second cannot take less than 11.8 s; slots are spaced 10% wider (1.1 s / 5),
    // so 13 s; a call that leaves late holds the fifth after it back as long (room for a loaded machine).
    expect(span).toBeGreaterThanOrEqual(11);
    expect(span).toBeLessThanOrEqual(15);

    // In order of creation: the rows' ids arrive ascending.
    const ids = throttled.map((call) => JSON.parse(call.body).data[0].id as number);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    // At 25 a second too (slots 44 ms apart, jobs waking in bunches in two processes), the calls
    // reach the receiver in order, not only get their permits in order: each waits until the one
    // before it has left its worker, and half a slot more (before, a worker busy between its
    // permit and its call was overtaken by the other now and then).
    const brisk = receiver.callsTo('/Brisk');
    expect(maxInWindow(brisk.map((call) => call.at))).toBeLessThanOrEqual(25);
    expect(brisk.map((call) => JSON.parse(call.body).data[0].id as number)).toEqual(Array.from({ length: 150 }, (_, index) => index + 1));

    // The other webhook was not held back: all its calls came within the throttled one's first two
    // seconds (its rows were inserted just after the throttled ones; its eleventh call is 2.2 s after
    // the first; waiting behind it, the last would come after 12 s).
    expect(free).toHaveLength(20);
    expect(Math.max(...free.map((call) => call.at))).toBeLessThan(sorted[10]!);

    // Both workers took part (each process counts the deliveries it made).
    for (const worker of workers) {
      const metrics = await (await fetch(`${worker.url}/metrics`)).text();
      const succeeded = Number(/^gateway_deliveries_total\{outcome="succeeded"\} (\d+)/m.exec(metrics)?.[1] ?? 0);
      expect(succeeded).toBeGreaterThan(0);
    }
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await receiver.stop();
    await app.end();
    await api.stop();
  }
});

it('keeps a throttled webhook in order of its changes with two dispatchers taking batches at once', { timeout: 90_000 }, async () => {
  const api = await startTestGateway({ ROLES: 'api,worker', ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
  const receiver = await new Receiver().start();
  const dispatchers: GatewayProcess[] = [];
  try {
    dispatchers.push(
      ...(await Promise.all([1, 2].map(() => spawnGateway({ DATABASE_URL: api.databaseUrl, ROLES: 'dispatcher', ALLOW_PRIVATE_TARGETS: 'true' })))),
    );
    const token = await api.token();
    await createWatchedWebhook(api, token, app, { table: 'Ordered', urls: [`${receiver.url}/ordered`], webhook: { CallThrottling: 50 } });
    // One change per transaction, as fast as they come: each dispatcher takes the few that are
    // there when it looks, the other the next few, at the same time.
    for (let n = 1; n <= 200; n++) await app`insert into "Ordered" (note) values (${`o${n}`})`;
    await waitFor(async () => (receiver.callsTo('/ordered').length >= 200 ? true : undefined), 30_000, '200 calls');
    const ids = receiver.callsTo('/ordered').map((call) => JSON.parse(call.body).data[0].id as number);
    expect(ids).toEqual(Array.from({ length: 200 }, (_, index) => index + 1));
  } finally {
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.stop()));
    await receiver.stop();
    await app.end();
    await api.stop();
  }
});

describe('calls that wake up late and bunch together', () => {
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Deletes what a test wrote under its prefix (the lines live a day), then disconnects. */
  async function cleanUp(client: Redis, prefix: string): Promise<void> {
    await deleteKeys(client, `${prefix}:*`);
    client.disconnect();
  }

  /** Asks for permits for every slot at once, from two connections (two processes), in the order given, and makes the calls. */
  async function sendAll(slots: readonly (Slot & { url: string })[], throttles: Throttle[]): Promise<(Slot & { url: string })[]> {
    const sent: (Slot & { url: string })[] = [];
    await Promise.all(
      slots.map(async (slot, index) => {
        const throttle = throttles[index % throttles.length]!;
        for (;;) {
          const callId = randomUUID();
          const permit = await throttle.acquirePermit('hook', slot.url, 100, slot, callId);
          if (permit.granted) {
            sent.push(slot);
            if (permit.saysWhenLeft) await throttle.callLeft('hook', slot.url, slot, callId); // as its worker does, once the call is made
            return;
          }
          await sleep(permit.waitMs);
        }
      }),
    );
    return sent;
  }

  it('go to each URL in the order their slots were booked', async () => {
    const clients = [new Redis(redisUrl), new Redis(redisUrl)];
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttles = clients.map((client) => new Throttle(client, prefix));
      const booked = await throttles[0]!.reserveSlots(
        // 10 per second: every call after the first queues for its slot.
        Array.from({ length: 12 }, (_, index) => ({ webhookId: 'hook', url: `https://receiver/${index % 2}`, limit: 10, epoch: 0 })),
      );
      const slots = booked.map((slot, index) => ({ ...slot, url: `https://receiver/${index % 2}` }));
      // All of them wake at once, latest booking first.
      const sent = await sendAll([...slots].reverse(), throttles);
      const order = (url: string) => sent.filter((slot) => slot.url === url).map((slot) => slot.ticket);
      expect(order('https://receiver/0')).toEqual([1, 2, 3, 4, 5, 6]);
      expect(order('https://receiver/1')).toEqual([1, 2, 3, 4, 5, 6]);
    } finally {
      await cleanUp(clients[0]!, prefix);
      clients[1]!.disconnect();
    }
  });

  it('wait for the call before them to say it left, then half a slot; or, if it never says, a second', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      // Each slot's call asks with an id of its own, as its worker does, and says it left under it.
      const callId = (webhookId: string, slot: Slot) => `${webhookId}:${slot.ticket}`;
      const ask = (webhookId: string, slot: Slot) => throttle.acquirePermit(webhookId, 'u', 10, slot, callId(webhookId, slot));
      const left = (webhookId: string, slot: Slot) => throttle.callLeft(webhookId, 'u', slot, callId(webhookId, slot));
      // 10 per second: slots 110 ms apart, half a slot is 55 ms. The first goes at once; the others queued.
      const [first, second, third] = await throttle.reserveSlots(Array.from({ length: 3 }, () => ({ webhookId: 'hook', url: 'u', limit: 10, epoch: 0 })));
      expect([first, second, third].map((slot) => slot!.queued)).toEqual([false, true, true]);
      // Each holds the line while calls queue behind it (the first too, though it did not queue itself).
      expect(await ask('hook', first!)).toEqual({ granted: true, saysWhenLeft: true });
      await left('hook', first!);
      await sleep(60);
      expect(await ask('hook', second!)).toEqual({ granted: true, saysWhenLeft: true });
      // Long past the gap, but the second has not said it left (its worker is busy, say): the third waits.
      await sleep(200);
      expect(await ask('hook', third!)).toMatchObject({ granted: false, inLine: true });
      // Once the second says it left, the third goes half a slot later (asked until it may, however slow the machine).
      const leftAt = Date.now();
      await left('hook', second!);
      let permit = await ask('hook', third!);
      while (!permit.granted) {
        expect(permit).toMatchObject({ inLine: true });
        await sleep(5);
        permit = await ask('hook', third!);
      }
      expect(Date.now() - leftAt).toBeGreaterThanOrEqual(50);
      expect(permit).toEqual({ granted: true, saysWhenLeft: true }); // it queued: the window counts it from when it left

      // A call whose worker dies between its permit and the call holds its line for LEFT_WAIT_MS, not until the grace period.
      const lost = await throttle.reserveSlots(Array.from({ length: 3 }, () => ({ webhookId: 'other', url: 'u', limit: 10, epoch: 0 })));
      expect(await ask('other', lost[0]!)).toMatchObject({ granted: true });
      await left('other', lost[0]!);
      await sleep(60);
      const permitted = Date.now(); // at most when Redis granted it
      expect(await ask('other', lost[1]!)).toEqual({ granted: true, saysWhenLeft: true });
      let askedAt: number;
      for (;;) {
        askedAt = Date.now();
        const permit = await ask('other', lost[2]!);
        if (permit.granted) break;
        expect(permit).toMatchObject({ inLine: true });
        await sleep(20);
      }
      expect(Date.now() - permitted).toBeGreaterThanOrEqual(Throttle.LEFT_WAIT_MS);
      // Asked before the grace period let it overtake: it went because the line was let go.
      expect(askedAt).toBeLessThanOrEqual(lost[2]!.at + Throttle.LINE_GRACE_MS);
    } finally {
      await cleanUp(client, prefix);
    }
  });

  it('still follow the call holding the line when one between them gave up its place', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      const ask = (slot: Slot) => throttle.acquirePermit('hook', 'u', 10, slot, `call-${slot.ticket}`);
      const left = (slot: Slot) => throttle.callLeft('hook', 'u', slot, `call-${slot.ticket}`);
      const [first, second, third, fourth] = await throttle.reserveSlots(Array.from({ length: 4 }, () => ({ webhookId: 'hook', url: 'u', limit: 10, epoch: 0 })));
      expect(await ask(first!)).toEqual({ granted: true, saysWhenLeft: true });
      await left(first!);
      await sleep(60);
      expect(await ask(second!)).toEqual({ granted: true, saysWhenLeft: true });
      // The third gives up its place (its delivery was superseded, say) while the second is being sent.
      await throttle.leaveLine('hook', 'u', third!);
      await left(second!);
      await sleep(60);
      expect(await ask(fourth!)).toMatchObject({ granted: true }); // not a second after the second's permit
    } finally {
      await cleanUp(client, prefix);
    }
  });

  it('are booked per webhook at its own spacing, batch after batch, with places in line per URL', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      const first = await throttle.reserveSlots([
        { webhookId: 'a', url: 'u1', limit: 10, epoch: 0 },
        { webhookId: 'b', url: 'u1', limit: 5, epoch: 0 },
        { webhookId: 'a', url: 'u2', limit: 10, epoch: 0 },
        { webhookId: 'a', url: 'u1', limit: 10, epoch: 0 },
        { webhookId: 'b', url: 'u1', limit: 5, epoch: 0 },
      ]);
      const [next] = await throttle.reserveSlots([{ webhookId: 'a', url: 'u1', limit: 10, epoch: 0 }]);
      // 10/s with the 10% margin: 110 ms apart; 5/s: 220 ms apart, from its own start (within the clocks' rounding and the round trips).
      const expected = [0, 0, 110, 220, 220, 330];
      [...first, next!].forEach((slot, index) => expect(Math.abs(slot.at - first[0]!.at - expected[index]!)).toBeLessThanOrEqual(50));
      expect([...first, next!].map((slot) => slot.ticket)).toEqual([1, 1, 1, 2, 2, 3]);
      expect([...first, next!].map((slot) => slot.queued)).toEqual([false, false, true, true, true, true]);
    } finally {
      await cleanUp(client, prefix);
    }
  });

  it('start on a clock and lines of their own in a new throttle epoch (the limit was changed)', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      const backlog = await throttle.reserveSlots(Array.from({ length: 10 }, () => ({ webhookId: 'hook', url: 'u', limit: 1, epoch: 0 })));
      const [fresh] = await throttle.reserveSlots([{ webhookId: 'hook', url: 'u', limit: 10, epoch: 1 }]);
      const [behindTheBacklog] = await throttle.reserveSlots([{ webhookId: 'hook', url: 'u', limit: 1, epoch: 0 }]);
      expect(backlog.at(-1)!.at - Date.now()).toBeGreaterThan(9000);
      expect(fresh!.at - Date.now()).toBeLessThan(100);
      expect(fresh).toMatchObject({ ticket: 1, epoch: 1, limit: 10, queued: false });
      expect(behindTheBacklog).toMatchObject({ ticket: 11, epoch: 0 });
      // The new epoch's call goes at once: it waits for nobody in its line, and the window is shared.
      const permit = await throttle.acquirePermit('hook', 'u', 10, fresh!, randomUUID());
      expect(permit).toEqual({ granted: true, saysWhenLeft: false });
      // A call still holding a slot of the old epoch is turned away: its delivery was booked afresh.
      const old = await throttle.acquirePermit('hook', 'u', 1, backlog[0]!, randomUUID());
      expect(old).toMatchObject({ granted: false, superseded: true });
    } finally {
      await cleanUp(client, prefix);
    }
  });

  it('count in the window from when they left their worker, once the webhook is near its limit', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      // Slots due now that did not queue: no line to wait in, only the window.
      const slot = (ticket: number, limit: number): Slot => ({ at: Date.now(), ticket, limit, epoch: 0, queued: false });
      // At 4 a second the first two calls of a quiet window need not say when they left; from the third (over half full) they must.
      const permits = [];
      for (const ticket of [1, 2, 3, 4]) permits.push(await throttle.acquirePermit('quiet', 'u', 4, slot(ticket, 4), `quiet-${ticket}`));
      expect(permits.map((permit) => permit.granted && permit.saysWhenLeft)).toEqual([false, false, true, true]);

      // At 1 a second: the call's worker was held up 800 ms between its permit and the call.
      const late = slot(1, 1);
      const permitted = Date.now();
      expect(await throttle.acquirePermit('hook', 'u', 1, late, 'late')).toEqual({ granted: true, saysWhenLeft: true });
      await sleep(800);
      const leftBefore = Date.now();
      await throttle.callLeft('hook', 'u', late, 'late');
      const leftAfter = Date.now();
      // The window (a second and 10%) has passed since the permit, not since the call left: the next still waits.
      await sleep(Math.max(0, permitted + 1100 + 50 - Date.now()));
      const next = slot(2, 1);
      const askBefore = Date.now();
      const refused = await throttle.acquirePermit('hook', 'u', 1, next, 'next');
      const askAfter = Date.now();
      expect(refused).toMatchObject({ granted: false, inLine: false });
      if (refused.granted) return;
      // Until the window has passed since the call left (Redis' clock, read between these times).
      expect(refused.waitMs).toBeGreaterThanOrEqual(leftBefore + 1100 - askAfter);
      expect(refused.waitMs).toBeLessThanOrEqual(leftAfter + 1100 - askBefore + 1);
      await sleep(refused.waitMs);
      expect(await throttle.acquirePermit('hook', 'u', 1, next, 'next')).toMatchObject({ granted: true });
    } finally {
      await cleanUp(client, prefix);
    }
  });

  it('count again a call that left after the window had let it go (a slow connect)', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      const slot = (ticket: number): Slot => ({ at: Date.now(), ticket, limit: 2, epoch: 0, queued: false });
      // At 2 a second, the first call of a quiet window need not say when it left; it left 1.5 s
      // after its permit, when the window (1.1 s) had dropped it, and its worker said so (it was late).
      expect(await throttle.acquirePermit('hook', 'u', 2, slot(1), 'slow')).toEqual({ granted: true, saysWhenLeft: false });
      await sleep(1500);
      const leftBefore = Date.now();
      await throttle.callLeft('hook', 'u', slot(1), 'slow');
      expect(await throttle.acquirePermit('hook', 'u', 2, slot(2), 'second')).toMatchObject({ granted: true });
      // Counted from when it left: with the second, the window is full until a window after that.
      const third = await throttle.acquirePermit('hook', 'u', 2, slot(3), 'third');
      const thirdAfter = Date.now();
      expect(third).toMatchObject({ granted: false, inLine: false });
      if (!third.granted) expect(third.waitMs).toBeGreaterThanOrEqual(leftBefore + 1100 - thirdAfter);
    } finally {
      await cleanUp(client, prefix);
    }
  });

  it('do not wait for a predecessor that never comes longer than the grace period', async () => {
    const client = new Redis(redisUrl);
    const prefix = `test-line-${randomUUID()}`;
    try {
      const throttle = new Throttle(client, prefix);
      const booked = await throttle.reserveSlots(Array.from({ length: 3 }, () => ({ webhookId: 'hook', url: 'u', limit: 10, epoch: 0 })));
      // The first call's job is gone (its webhook deleted, say): the others go after the grace period, in order.
      const started = Date.now();
      const sent = await sendAll(
        booked.slice(1).map((slot) => ({ ...slot, url: 'u' })),
        [throttle],
      );
      expect(sent.map((slot) => slot.ticket)).toEqual([2, 3]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(Throttle.LINE_GRACE_MS - 50);
    } finally {
      await cleanUp(client, prefix);
    }
  });
});

it('applies a lowered CallThrottling to messages already queued, without holding back another webhook', { timeout: 90_000 }, async () => {
  const gateway = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(gateway.databaseUrl, { max: 2, onnotice: () => {} });
  const receiver = await new Receiver().start();
  try {
    const token = await gateway.token();
    const hooks: Record<string, string> = {};
    for (const name of ['Lowered', 'Other']) {
      const hook = await createWatchedWebhook(gateway, token, app, { table: name, urls: [`${receiver.url}/${name}`], webhook: { CallThrottling: 100 } });
      hooks[name] = hook.Id;
    }

    // 300 messages booked at 100 per second (3.3 s of slots), then the limit drops to 2: more
    // calls wait than a worker has slots (200), and none of them may hold one while it waits.
    await app`insert into "Lowered" select from generate_series(1, 300)`;
    await waitFor(async () => (receiver.callsTo('/Lowered').length > 0 ? true : undefined), 10_000, 'the first call');
    const updated = await gateway.request('PUT', `/v2/outgoingWebhooks/${hooks.Lowered}`, { token, body: { CallThrottling: 2 } });
    expect(updated.status).toBe(200);
    const loweredAt = Date.now();
    await app`insert into "Other" select from generate_series(1, 20)`;

    // The other webhook goes through while the lowered one's messages wait.
    await waitFor(async () => (receiver.callsTo('/Other').length >= 20 ? true : undefined), 15_000, "the other webhook's 20 calls");
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, loweredAt + 6000 - Date.now())));
    const afterTheChange = receiver
      .callsTo('/Lowered')
      .map((call) => call.at)
      .filter((at) => at > loweredAt + 1200); // calls permitted under the old limit have left the window
    console.log(`lowered to 2/s: ${afterTheChange.length} calls in the 4.8 s after the change, at most ${maxInWindow(afterTheChange)} in any second`);
    expect(afterTheChange.length).toBeGreaterThanOrEqual(5);
    expect(maxInWindow(afterTheChange)).toBeLessThanOrEqual(2);
    // The rest are cancelled with their webhook.
    expect((await gateway.request('DELETE', `/v2/outgoingWebhooks/${hooks.Lowered}`, { token })).status).toBe(204);
  } finally {
    await receiver.stop();
    await app.end();
    await gateway.stop();
  }
});

it('applies a raised CallThrottling to messages already queued, in order, also with new ones arriving', { timeout: 90_000 }, async () => {
  const gateway = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(gateway.databaseUrl, { max: 4, onnotice: () => {} });
  const receiver = await new Receiver().start();
  try {
    const token = await gateway.token();
    const hook = await createWatchedWebhook(gateway, token, app, { table: 'Raised', urls: [`${receiver.url}/raised`], webhook: { CallThrottling: 2 } });
    // 40 messages booked at 2 per second: 22 s of slots. After a couple of calls the limit goes to
    // 20, while new rows keep coming (one every 10 ms, from 200 ms before the change to 300 ms after).
    await app`insert into "Raised" select from generate_series(1, 40)`;
    await waitFor(async () => (receiver.callsTo('/raised').length >= 2 ? true : undefined), 10_000, 'the first calls');
    let inserting = true;
    const newRows = (async () => {
      while (inserting) {
        await app`insert into "Raised" default values`;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const updated = await gateway.request('PUT', `/v2/outgoingWebhooks/${hook.Id}`, { token, body: { CallThrottling: 20 } });
    expect(updated.status).toBe(200);
    const raisedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 300));
    inserting = false;
    await newRows;
    const [{ rowCount }] = await app<[{ rowCount: number }]>`select count(*)::int as "rowCount" from "Raised"`;

    // At 20 a second the rest take a few seconds (1.1 s for the window to let the old limit's calls out first), not 20 s and more at 2.
    const rowOf = (call: { body: string }) => (JSON.parse(call.body) as { data: [{ id: number }] }).data[0].id;
    await waitFor(async () => (new Set(receiver.callsTo('/raised').map(rowOf)).size >= rowCount ? true : undefined), 60_000, `all ${rowCount} messages`);
    const doneAt = Math.max(...receiver.callsTo('/raised').map((call) => call.at));
    console.log(`raised from 2/s to 20/s: ${rowCount} messages, the last ${doneAt - raisedAt} ms after the change`);
    expect(doneAt - raisedAt).toBeLessThan(((rowCount * 1.1) / 20) * 1000 + 3000);
    const before = receiver.callsTo('/raised').filter((call) => call.at <= raisedAt);
    const after = receiver.callsTo('/raised').filter((call) => call.at > raisedAt);
    expect(maxInWindow(before.map((call) => call.at))).toBeLessThanOrEqual(2);
    expect(maxInWindow(after.map((call) => call.at))).toBeLessThanOrEqual(20);
    // In the order the rows were inserted, the new ones after the backlog. A call under way at the
    // change may be made once more (at least once).
    const rows = receiver.callsTo('/raised').map(rowOf);
    expect(rows.filter((row, index) => rows.indexOf(row) === index)).toEqual(Array.from({ length: rowCount }, (_, index) => index + 1));
    expect(rows.length - rowCount).toBeLessThanOrEqual(2);
    // Each message ends delivered, with every call logged.
    await waitFor(async () => {
      const [row] = await app<[{ done: number; attempts: number }]>`select
        (select count(*)::int from webhook_gateway.deliveries where webhook_id = ${hook.Id} and status = 'SUCCEEDED') as done,
        (select count(*)::int from webhook_gateway.delivery_attempts where webhook_id = ${hook.Id}) as attempts`;
      return row.done === rowCount && row.attempts === rows.length ? true : undefined;
    }, 10_000, 'the deliveries recorded');
  } finally {
    await receiver.stop();
    await app.end();
    await gateway.stop();
  }
});

it('does not let a throttled backlog that came due at once (workers were down) hold back another webhook', { timeout: 90_000 }, async () => {
  const api = await startTestGateway({ ROLES: 'api,dispatcher', ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
  const receiver = await new Receiver().start();
  let worker: Awaited<ReturnType<typeof startTestGateway>> | undefined;
  try {
    const token = await api.token();
    const urls = Array.from({ length: 10 }, (_, index) => `${receiver.url}/backlog${index}`);
    await createWatchedWebhook(api, token, app, { table: 'Backlog', urls, webhook: { CallThrottling: 50 } });
    await createWatchedWebhook(api, token, app, { table: 'Bystander', urls: [`${receiver.url}/bystander`] });
    // 60 rows to 10 URLs: 600 calls booked at 50 a second, 13 s of slots, all passed while no worker runs.
    await app`insert into "Backlog" select from generate_series(1, 60)`;
    await waitFor(async () => {
      const [row] = await app<[{ n: number }]>`select count(*)::int as n from webhook_gateway.deliveries`;
      return row.n === 600 ? true : undefined;
    });
    await new Promise((resolve) => setTimeout(resolve, 14_000));

    // A worker starts: three times its 200 slots of calls are due at once, 50 a second may go.
    worker = await startTestGateway({ ROLES: 'worker', ALLOW_PRIVATE_TARGETS: 'true' }, api.databaseUrl);
    await waitFor(async () => (receiver.calls.length > 0 ? true : undefined), 10_000, 'the backlog to start');
    const insertedAt = Date.now();
    await app`insert into "Bystander" select from generate_series(1, 5)`;
    await waitFor(async () => (receiver.callsTo('/bystander').length >= 5 ? true : undefined), 30_000, "the bystander's calls");
    // Waiting behind the backlog would take (600 - 200) / 50 = 8 s.
    expect(Math.max(...receiver.callsTo('/bystander').map((call) => call.at)) - insertedAt).toBeLessThan(5000);
    // And the backlog still keeps its limit.
    const backlog = receiver.calls.filter((call) => call.path.startsWith('/backlog')).map((call) => call.at);
    expect(maxInWindow(backlog, 1000)).toBeLessThanOrEqual(50);
  } finally {
    await worker?.stop();
    await receiver.stop();
    await app.end();
    await api.stop();
  }
});

it("delivers when Redis knows a newer throttle epoch than Postgres (Postgres restored from a backup)", { timeout: 60_000 }, async () => {
  const gateway = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true' });
  const app = postgres(gateway.databaseUrl, { max: 2, onnotice: () => {} });
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const receiver = await new Receiver().start();
  try {
    const token = await gateway.token();
    const hook = await createWatchedWebhook(gateway, token, app, { table: 'Restored', urls: [`${receiver.url}/restored`], webhook: { CallThrottling: 5 } });
    // Postgres is back at epoch 0, while Redis kept epoch 3 from the changes of the limit made after the backup.
    const [installation] = await app<[{ id: string }]>`select id from webhook_gateway.installation`;
    await redis.set(`webhook-gateway:${installation.id}:epoch:${hook.Id}`, '3', 'PX', 86_400_000);

    await app`insert into "Restored" select from generate_series(1, 10)`;
    const rowOf = (call: { body: string }) => (JSON.parse(call.body) as { data: [{ id: number }] }).data[0].id;
    await waitFor(async () => (new Set(receiver.callsTo('/restored').map(rowOf)).size >= 10 ? true : undefined), 15_000, 'the 10 messages');
    const [{ epoch }] = await app<[{ epoch: number }]>`select throttle_epoch as epoch from webhook_gateway.webhooks where id = ${hook.Id}`;
    expect(epoch).toBe(4);
    expect(maxInWindow(receiver.callsTo('/restored').map((call) => call.at))).toBeLessThanOrEqual(5);
  } finally {
    await receiver.stop();
    redis.disconnect();
    await app.end();
    await gateway.stop();
  }
});
