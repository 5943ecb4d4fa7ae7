import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';
import { openConnection, openSubscriptions, StatusWatcher, waitForSubscriptions, type StatusChange } from './support/live';
import { spawnGateway, type GatewayProcess } from './support/process';
import { Receiver } from './support/receiver';
import { waitFor } from './support/wait';
import { createWatchedWebhook } from './support/watched';

// The subscribers talk to an API-only process; a second process (dispatcher and worker) delivers.
let api: TestGateway;
let deliverer: GatewayProcess;
let delivererUrl: string;
let app: postgres.Sql;
let receiver: Receiver;
let token: string;
const watchers: StatusWatcher[] = [];

beforeAll(async () => {
  api = await startTestGateway({ ROLES: 'api', ALLOW_PRIVATE_TARGETS: 'true', TOKEN_RECHECK_INTERVAL: '1s' });
  deliverer = await spawnGateway({
    DATABASE_URL: api.databaseUrl,
    ROLES: 'dispatcher,worker',
    ALLOW_PRIVATE_TARGETS: 'true',
    RETRY_SCHEDULE: '1s,1s,1s',
  });
  delivererUrl = /listening on (\S+)/.exec(deliverer.output())![1]!;
  app = postgres(api.databaseUrl, { max: 2, onnotice: () => {} });
  receiver = await new Receiver().start();
  token = await api.token();
});

afterAll(async () => {
  await Promise.all(watchers.map((watcher) => watcher.dispose()));
  await deliverer?.stop();
  await receiver?.stop();
  await app?.end();
  await api?.stop();
});

let tables = 0;

/** A webhook on a table of its own, fired by inserts; returns its id and the table. */
async function watchedWebhook(paths: string[], webhook: Record<string, unknown> = {}): Promise<{ id: string; table: string }> {
  const table = `live_${++tables}`;
  const created = await createWatchedWebhook(api, token, app, { table, urls: paths.map((path) => `${receiver.url}${path}`), webhook });
  return { id: created.Id, table };
}

function watch(variables: { webhookId?: string; messageId?: string } = {}, params: Record<string, unknown> | undefined = { Authorization: `Bearer ${token}` }) {
  const watcher = new StatusWatcher(api.url, params, variables);
  watchers.push(watcher);
  return watcher;
}

/** A subscription, once the API process has it open (so that no change is missed). */
async function subscribe(variables: { webhookId?: string; messageId?: string }, params?: Record<string, unknown>) {
  const before = await openSubscriptions(api.url);
  const watcher = watch(variables, params);
  await waitForSubscriptions(api.url, before + 1);
  return watcher;
}

const statusesOf = (changes: StatusChange[], url: string) => changes.filter((change) => change.url === url).map((change) => change.status);

describe('deliveryStatus over graphql-ws', () => {
  it('reports QUEUED, SENDING and SUCCEEDED for each URL, in order, from the process that delivered', async () => {
    const hook = await watchedWebhook(['/live/a', '/live/b']);
    const watcher = await subscribe({ webhookId: hook.id });

    await app.unsafe(`insert into ${hook.table} (note) values ('hello')`);
    const changes = await watcher.waitForChanges(6);

    const [message] = (await api.graphql(`{ messages(webhookId: "${hook.id}") { edges { node { id eventId } } } }`, {}, token)).body.data
      .messages.edges;
    for (const path of ['/live/a', '/live/b']) {
      const url = `${receiver.url}${path}`;
      expect(statusesOf(changes, url)).toEqual(['QUEUED', 'SENDING', 'SUCCEEDED']);
      const succeeded = changes.find((change) => change.url === url && change.status === 'SUCCEEDED')!;
      expect(succeeded).toMatchObject({ messageId: message.node.id, webhookId: hook.id, eventId: message.node.eventId, attempt: 1, httpStatus: 200, error: null });
      expect(succeeded.durationMs).toBeGreaterThanOrEqual(0);
      expect(succeeded.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
    }
    expect(receiver.callsTo('/live/a')).toHaveLength(1);
  });

  it('reports RETRY_SCHEDULED with the next attempt time when a receiver fails, then the retry', async () => {
    const hook = await watchedWebhook(['/live/flaky']);
    receiver.script('/live/flaky', { status: 500 });
    const watcher = await subscribe({ webhookId: hook.id });

    await app.unsafe(`insert into ${hook.table} (note) values ('retry me')`);
    const changes = await watcher.waitForChanges(5);
    expect(changes.map((change) => `${change.status}#${change.attempt}`)).toEqual([
      'QUEUED#1',
      'SENDING#1',
      'RETRY_SCHEDULED#1',
      'SENDING#2',
      'SUCCEEDED#2',
    ]);
    const retry = changes[2]!;
    expect(retry.httpStatus).toBe(500);
    expect(retry.error).toBeTruthy();
    const due = Date.parse(retry.nextAttemptAt!) - Date.parse(retry.at);
    // 1 s ± 20% jitter, from when the attempt was judged; the event's time is taken once it is recorded, a little later.
    expect(due).toBeGreaterThan(300);
    expect(due).toBeLessThan(1500);
  });

  it('reports DEAD, with no next attempt, once the last attempt of the schedule fails', async () => {
    const hook = await watchedWebhook(['/live/down']);
    receiver.answer('/live/down', { status: 500 });
    const watcher = await subscribe({ webhookId: hook.id });

    await app.unsafe(`insert into ${hook.table} (note) values ('never taken')`);
    // RETRY_SCHEDULE '1s,1s,1s': the first attempt and three retries.
    const [dead] = await watcher.waitForChanges(1, (change) => change.status === 'DEAD');
    expect(watcher.changes.map((change) => `${change.status}#${change.attempt}`)).toEqual([
      'QUEUED#1',
      'SENDING#1',
      'RETRY_SCHEDULED#1',
      'SENDING#2',
      'RETRY_SCHEDULED#2',
      'SENDING#3',
      'RETRY_SCHEDULED#3',
      'SENDING#4',
      'DEAD#4',
    ]);
    expect(dead).toMatchObject({ httpStatus: 500, nextAttemptAt: null });
    expect(dead!.error).toBeTruthy();
    expect(receiver.callsTo('/live/down')).toHaveLength(4);
  });

  it('filters by webhookId and by messageId', async () => {
    const first = await watchedWebhook(['/live/first']);
    const second = await watchedWebhook(['/live/second']);
    // A message of the second webhook to redeliver later.
    await app.unsafe(`insert into ${second.table} (note) values ('earlier')`);
    const earlier = await waitFor(async () => {
      const result = await api.graphql(`{ messages(webhookId: "${second.id}", status: SUCCEEDED) { edges { node { id } } } }`, {}, token);
      return result.body.data.messages.edges[0]?.node.id as string | undefined;
    });

    const before = await openSubscriptions(api.url);
    const byWebhook = watch({ webhookId: first.id });
    const byMessage = watch({ messageId: earlier });
    const everything = watch();
    await waitForSubscriptions(api.url, before + 3);

    await app.unsafe(`insert into ${first.table} (note) values ('one')`);
    await app.unsafe(`insert into ${second.table} (note) values ('two')`);
    const redelivered = await api.graphql(`mutation { redeliverMessage(id: "${earlier}") { id } }`, {}, token);
    expect(redelivered.body.errors).toBeUndefined();

    // Both webhooks' new messages and the redelivery: 3 deliveries of 3 changes each.
    await everything.waitForChanges(3, (change) => change.status === 'SUCCEEDED');
    await byMessage.waitForChanges(3);
    await byWebhook.waitForChanges(3);
    expect(new Set(everything.changes.map((change) => change.webhookId))).toEqual(new Set([first.id, second.id]));
    expect(byWebhook.changes.every((change) => change.webhookId === first.id)).toBe(true);
    expect(byWebhook.changes).toHaveLength(3);
    expect(byMessage.changes.map((change) => change.status)).toEqual(['QUEUED', 'SENDING', 'SUCCEEDED']);
    expect(byMessage.changes.every((change) => change.messageId === earlier && change.attempt === 1)).toBe(true); // a redelivery's new series
  });

  it('reports CANCELLED for the deliveries a deleted webhook leaves undone', async () => {
    const hook = await watchedWebhook(['/live/slow'], { CallThrottling: 1 });
    const watcher = await subscribe({ webhookId: hook.id });

    await app.unsafe(`insert into ${hook.table} (note) select 'n' || n from generate_series(1, 4) n`);
    await watcher.waitForChanges(1, (change) => change.status === 'SUCCEEDED');
    expect((await api.request('DELETE', `/v2/outgoingWebhooks/${hook.id}`, { token })).status).toBe(204);

    const cancelled = await watcher.waitForChanges(2, (change) => change.status === 'CANCELLED');
    const succeeded = watcher.changes.filter((change) => change.status === 'SUCCEEDED').map((change) => change.messageId);
    expect(cancelled.length + succeeded.length).toBeGreaterThanOrEqual(4);
    expect(cancelled.some((change) => succeeded.includes(change.messageId))).toBe(false);
  });

  it('streams the same changes over HTTP as server-sent events', async () => {
    const hook = await watchedWebhook(['/live/sse']);
    const query = encodeURIComponent(`subscription { deliveryStatus(webhookId: "${hook.id}") { url status } }`);
    const before = await openSubscriptions(api.url);
    const controller = new AbortController();
    const response = await fetch(`${api.url}/graphql?query=${query}`, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
      signal: controller.signal,
    });
    expect(response.headers.get('content-type')).toMatch(/text\/event-stream/);
    await waitForSubscriptions(api.url, before + 1);
    await app.unsafe(`insert into ${hook.table} (note) values ('sse')`);
    const reader = response.body!.getReader();
    let text = '';
    while (!text.includes('SUCCEEDED')) text += new TextDecoder().decode((await reader.read()).value);
    controller.abort();
    const statuses = [...text.matchAll(/^data: (.+)$/gm)].map((line) => JSON.parse(line[1]!).data.deliveryStatus.status);
    expect(statuses).toEqual(['QUEUED', 'SENDING', 'SUCCEEDED']);

    const anonymous = await fetch(`${api.url}/graphql?query=${query}`, { headers: { accept: 'text/event-stream' } });
    expect(anonymous.status).toBe(401);
    expect(await anonymous.text()).toContain('"code":"Unauthorized"');
  });

  it('ends a server-sent event stream with Unauthorized once its profile is revoked (TOKEN_RECHECK_INTERVAL)', async () => {
    const revoked = await api.token({ name: 'Revoked Streamer' });
    const query = encodeURIComponent('subscription { deliveryStatus { url status } }');
    const before = await openSubscriptions(api.url);
    const response = await fetch(`${api.url}/graphql?query=${query}`, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${revoked}` },
    });
    expect(response.status).toBe(200);
    await waitForSubscriptions(api.url, before + 1);
    await app`update webhook_gateway.api_clients set revoked_at = now() where name = 'Revoked Streamer'`;

    const reader = response.body!.getReader();
    let text = '';
    for (;;) {
      const { value, done } = await reader.read(); // the stream ends by itself, or the test times out
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const [last] = [...text.matchAll(/^data: (.+)$/gm)].map((line) => JSON.parse(line[1]!)).slice(-1);
    expect(last.errors[0]).toMatchObject({ message: 'The access token is invalid or expired', extensions: { code: 'Unauthorized' } });
    expect(text).toMatch(/event: complete/);
    // (an earlier test's aborted stream may close meanwhile too)
    await waitFor(async () => ((await openSubscriptions(api.url)) <= before ? true : undefined), 10_000, 'the subscription to close');
  });

  it('refuses a connection without a valid token, with the reason', async () => {
    const expired = await api.token({ name: 'Expired' });
    await app`update webhook_gateway.oauth_tokens t set expires_at = now() - interval '1 second'
      from webhook_gateway.api_clients c where c.id = t.client_id and c.name = 'Expired'`;
    const cases = [
      { params: undefined, reason: /access token is required/ },
      { params: { Authorization: 'Bearer not-a-token' }, reason: /invalid or expired/ },
      { params: { Authorization: `Bearer ${expired}` }, reason: /invalid or expired/ },
    ];
    for (const { params, reason } of cases) {
      const watcher = new StatusWatcher(api.url, params);
      watchers.push(watcher);
      await waitFor(async () => watcher.closed, 10_000, 'the socket to close');
      expect(watcher.closed!.code).toBe(4401);
      expect(watcher.closed!.reason).toMatch(reason);
      expect(watcher.changes).toEqual([]);
    }
  });

  it('closes the connection when its token expires', async () => {
    const expiring = await api.token({ name: 'Expiring' });
    await app`update webhook_gateway.oauth_tokens t set expires_at = now() + interval '2 seconds'
      from webhook_gateway.api_clients c where c.id = t.client_id and c.name = 'Expiring'`;
    const watcher = watch({}, { Authorization: `Bearer ${expiring}` });
    await waitFor(async () => watcher.closed, 10_000, 'the socket to close');
    expect(watcher.closed).toEqual({ code: 4401, reason: 'Unauthorized: the access token expired' });
  });

  it('checks the token again for every operation: a revoked profile is cut off', async () => {
    const revoked = await api.token({ name: 'Revoked' });
    const { client, closed } = openConnection(api.url, { Authorization: `Bearer ${revoked}` }); // one connection throughout
    try {
      const first = await client.iterate({ query: '{ outgoingWebhooks { id } }' }).next();
      expect(first.value?.data?.outgoingWebhooks).toBeInstanceOf(Array);
      await app`update webhook_gateway.api_clients set revoked_at = now() where name = 'Revoked'`;
      await client.iterate({ query: '{ outgoingWebhooks { id } }' }).next().catch(() => undefined);
      expect(await waitFor(async () => closed(), 10_000, 'the socket to close')).toEqual({
        code: 4401,
        reason: 'Unauthorized: The access token is invalid or expired',
      });
    } finally {
      await client.dispose();
    }
  });

  it('lets a read-only profile subscribe, and refuses unknown webhooks and messages', async () => {
    const readOnly = await api.token({ readOnly: true, name: 'Reader' });
    const hook = await watchedWebhook(['/live/read']);
    const watcher = await subscribe({ webhookId: hook.id }, { Authorization: `Bearer ${readOnly}` });
    await app.unsafe(`insert into ${hook.table} (note) values ('read')`);
    await watcher.waitForChanges(3);

    for (const variables of [{ webhookId: 'nope12' }, { messageId: '00000000-0000-7000-8000-000000000000' }]) {
      const unknown = watch(variables);
      await waitFor(async () => (unknown.errors.length > 0 ? true : undefined), 10_000, 'an error');
      expect(unknown.errors[0]).toMatchObject({ extensions: { code: 'ObjectNotFound' } });
    }
  });

  it('counts deliveries, latency, queue, outbox, dead deliveries and open subscriptions in /metrics', async () => {
    // A delivery of its own that is retried once and then succeeds, whatever ran before.
    const hook = await watchedWebhook(['/live/metrics']);
    receiver.script('/live/metrics', { status: 503 });
    const watcher = await subscribe({ webhookId: hook.id });
    await app.unsafe(`insert into ${hook.table} (note) values ('counted')`);
    await watcher.waitForChanges(1, (change) => change.status === 'SUCCEEDED');

    const worker = await (await fetch(`${delivererUrl}/metrics`)).text();
    expect(worker).toMatch(/^gateway_deliveries_total\{outcome="succeeded"\} [1-9]/m);
    expect(worker).toMatch(/^gateway_deliveries_total\{outcome="retry_scheduled"\} [1-9]/m);
    expect(worker).toMatch(/^gateway_delivery_latency_seconds_count [1-9]/m);
    expect(worker).toMatch(/^gateway_delivery_attempt_duration_seconds_bucket\{le="\+Inf"\} [1-9]/m);
    const served = await (await fetch(`${api.url}/metrics`)).text();
    for (const gauge of ['gateway_delivery_queue_jobs{state="waiting"}', 'gateway_outbox_rows', 'gateway_deliveries_dead']) {
      expect(served).toMatch(new RegExp(`^${gauge.replace(/[{}]/g, '\\$&')} \\d+$`, 'm'));
    }
    // Subscriptions ended earlier may take a moment to close on the server's side.
    const open = watchers.filter((each) => !each.closed && !each.completed && each.errors.length === 0).length;
    await waitFor(async () => ((await openSubscriptions(api.url)) === open ? true : undefined), 10_000, `${open} open subscriptions`);
  });
});
