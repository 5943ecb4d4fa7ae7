import postgres from 'postgres';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';
import { createWatchedWebhook } from './support/watched';
import { maxInWindow, Receiver } from './support/receiver';
import { waitFor } from './support/wait';

let gw: TestGateway;
let token: string;
let app: postgres.Sql;
let receiver: Receiver;
let counter = 0;

beforeAll(async () => {
  gw = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true', RETRY_SCHEDULE: '200ms,300ms,400ms', DELIVERY_TIMEOUT_MS: '2000' });
  token = await gw.token();
  app = postgres(gw.databaseUrl, { max: 2, onnotice: () => {} });
  receiver = await new Receiver().start();
});

afterAll(async () => {
  await app?.end();
  await gw?.stop();
  await receiver?.stop();
});

/** A table, and a webhook on it that fires on inserts to the given receiver paths. */
async function setup(paths: string[], webhook: Record<string, unknown> = {}) {
  const table = `Deliveries${++counter}`;
  const created = await createWatchedWebhook(gw, token, app, { table, urls: paths.map((path) => `${receiver.url}${path}`), webhook });
  return { table, webhook: created };
}

/** Waits until a statement of this database waits for a lock (one a test holds open). */
async function blockedOnLock() {
  await waitFor(async () => {
    const [row] = await app<[{ n: number }]>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`;
    return row.n >= 1 ? true : undefined;
  });
}

async function message(id: string) {
  const response = await gw.graphql(
    `query($id: ID!) { message(id: $id) { id status attempts { url attempt attemptedAt durationMs succeeded httpStatus error responseBody } } }`,
    { id },
    token,
  );
  return response.body.data.message;
}

async function waitForStatus(id: string, status: string) {
  return waitFor(async () => {
    const found = await message(id);
    return found.status === status ? found : undefined;
  }, 15_000, `message ${id} to be ${status}`);
}

function verify(secret: string, call: { headers: Record<string, unknown>; body: string }) {
  return new Webhook(secret).verify(call.body, call.headers as Record<string, string>);
}

describe('delivery', () => {
  it('reaches every URL of a multicast webhook once, signed so that standardwebhooks verifies it', async () => {
    const { table, webhook } = await setup([`/multi-${counter + 1}/a`, `/multi-${counter + 1}/b`]);
    const insertedAt = Date.now();
    await app.unsafe(`insert into "${table}" (note) values ('hello')`);
    const calls = await waitFor(async () => {
      const found = receiver.calls.filter((call) => call.path.startsWith(`/multi-${counter}/`));
      return found.length >= 2 ? found : undefined;
    });
    const messageId = calls[0]!.headers['webhook-id'] as string;
    const delivered = await waitForStatus(messageId, 'SUCCEEDED');

    expect(calls.map((call) => call.path).sort()).toEqual([`/multi-${counter}/a`, `/multi-${counter}/b`]);
    for (const call of calls) {
      expect(call.method).toBe('POST');
      expect(call.headers['content-type']).toBe('application/json');
      expect(call.headers['user-agent']).toMatch(/^webhook-gateway\/\d+\.\d+\.\d+$/);
      expect(call.headers['webhook-id']).toBe(messageId);
      expect(verify(webhook.Secret, call)).toMatchObject({ messageId, webhookId: webhook.Id, data: [{ id: 1, note: 'hello' }] });
    }
    expect(delivered.attempts).toHaveLength(2);
    expect(delivered.attempts.every((attempt: any) => attempt.succeeded && attempt.httpStatus === 200)).toBe(true);
    expect(delivered.attempts[0].responseBody).toBe('status 200');
    // Each attempt's time is when its call was made: after the row's commit, before the receiver had it.
    for (const attempt of delivered.attempts) {
      const call = calls.find((candidate) => candidate.path.endsWith(attempt.url.slice(-2)))!;
      expect(Date.parse(attempt.attemptedAt)).toBeGreaterThanOrEqual(insertedAt);
      expect(Date.parse(attempt.attemptedAt)).toBeLessThanOrEqual(call.at);
      expect(attempt.durationMs).toEqual(expect.any(Number));
    }

    await new Promise((resolve) => setTimeout(resolve, 1000)); // nothing more arrives (a second handover, a retry)
    expect(receiver.calls.filter((call) => call.path.startsWith(`/multi-${counter}/`))).toHaveLength(2);
    const stats = await gw.request('GET', `/v2/outgoingWebhooks/${webhook.Id}`, { token });
    expect(stats.body).toMatchObject({ Events: 1, Messages: 1, Calls: 2, Errors: 0 });
  });

  it('hides the secret a body carries from read-only profiles', async () => {
    const path = `/with-secret-${counter + 1}`;
    const { table, webhook } = await setup([path], { DefaultPayloadIncludesSecret: true });
    receiver.answer(path, { status: 200, body: `got secret ${webhook.Secret}` }); // a receiver that echoes what it got
    await app.unsafe(`insert into "${table}" (note) values ('secret inside')`);
    const [call] = await waitFor(async () => (receiver.callsTo(path).length === 1 ? receiver.callsTo(path) : undefined));
    expect(call!.body).toContain(webhook.Secret); // the receiver gets it, as asked
    await waitForStatus(call!.headers['webhook-id'] as string, 'SUCCEEDED');

    const reader = await gw.token({ readOnly: true, name: 'Reader', email: 'reader@acme.com' });
    const query = `query($id: ID!, $webhookId: ID!) {
      message(id: $id) { body attempts { responseBody } } messages(webhookId: $webhookId) { edges { node { body } } } }`;
    const variables = { id: call!.headers['webhook-id'], webhookId: webhook.Id };
    const asReader = (await gw.graphql(query, variables, reader)).body.data;
    for (const body of [asReader.message.body, asReader.messages.edges[0].node.body]) {
      expect(body).not.toContain(webhook.Secret);
      expect(JSON.parse(body)).toMatchObject({ secret: '[secret hidden]' });
    }
    expect(asReader.message.attempts[0].responseBody).toBe('got secret [secret hidden]');
    const asWriter = (await gw.graphql(query, variables, token)).body.data;
    expect(asWriter.message.body).toBe(call!.body);
    expect(asWriter.message.attempts[0].responseBody).toBe(`got secret ${webhook.Secret}`);
  });

  it('signs with both secrets during a rotation', async () => {
    const path = `/rotate-${counter + 1}`;
    const { table, webhook } = await setup([path]);
    const rotated = await gw.request('PATCH', `/v2/outgoingWebhooks/${webhook.Id}/regenerateSecret`, { token });
    await app.unsafe(`insert into "${table}" (note) values ('rotated')`);
    const [call] = await waitFor(async () => (receiver.callsTo(path).length > 0 ? receiver.callsTo(path) : undefined));
    expect(String(call!.headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(verify(webhook.Secret, call!)).toMatchObject({ data: [{ note: 'rotated' }] });
    expect(verify(rotated.body.Secret, call!)).toMatchObject({ data: [{ note: 'rotated' }] });
  });

  it('delivers a payload template nested as deep as allowed (32 levels), rendered', async () => {
    const path = `/deep-template-${counter + 1}`;
    const { table, webhook } = await setup([path]);
    let template = "{'id': '[@field:id]', 'note': '[@field:note]'}";
    let expected: unknown = { id: 1, note: 'deep' };
    for (let level = 2; level <= 32; level++) {
      template = level % 2 === 0 ? `[${template}]` : `{'level${level}': ${template}}`;
      expected = level % 2 === 0 ? [expected] : { [`level${level}`]: expected };
    }
    const [event] = (await gw.request('GET', `/v2/outgoingWebhooks/${webhook.Id}/events`, { token })).body.Result;
    const saved = await gw.request('PUT', `/v2/outgoingWebhooks/${webhook.Id}/events/${event.Id}`, { token, body: { CustomPayloadTemplate: template } });
    expect(saved.status).toBe(200);
    await app.unsafe(`insert into "${table}" (note) values ('deep')`);
    const [call] = await waitFor(async () => (receiver.callsTo(path).length > 0 ? receiver.callsTo(path) : undefined));
    expect(JSON.parse(call!.body)).toEqual(expected);
  });

  it('keeps every replaced secret signing until its own overlap ends, across rotations in a row', async () => {
    const path = `/rotate-twice-${counter + 1}`;
    const { table, webhook } = await setup([path], { DefaultPayloadIncludesSecret: true });
    const callsTo = (n: number) => waitFor(async () => (receiver.callsTo(path).length >= n ? receiver.callsTo(path) : undefined));
    await app.unsafe(`insert into "${table}" (note) values ('before')`);
    const [before] = await callsTo(1);
    const first = await gw.request('PATCH', `/v2/outgoingWebhooks/${webhook.Id}/regenerateSecret`, { token });
    const second = await gw.request('PATCH', `/v2/outgoingWebhooks/${webhook.Id}/regenerateSecret`, { token });
    await app.unsafe(`insert into "${table}" (note) values ('twice')`);
    const twice = (await callsTo(2))[1]!;
    expect(String(twice.headers['webhook-signature']).split(' ')).toHaveLength(3);
    for (const secret of [webhook.Secret, first.body.Secret, second.body.Secret]) {
      expect(verify(secret, twice)).toMatchObject({ data: [{ note: 'twice' }] });
    }

    // The original secret's overlap ends (as if a day went by): it signs no more, the others still do.
    await app`update webhook_gateway.webhooks set previous_secrets = jsonb_set(previous_secrets, '{1,expiresAt}', to_jsonb(now() - interval '1 second'))
      where id = ${webhook.Id}`;
    await app.unsafe(`insert into "${table}" (note) values ('later')`);
    const later = (await callsTo(3))[2]!;
    expect(String(later.headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(() => verify(webhook.Secret, later)).toThrow();
    expect(verify(first.body.Secret, later)).toMatchObject({ data: [{ note: 'later' }] });
    expect(verify(second.body.Secret, later)).toMatchObject({ data: [{ note: 'later' }] });

    // It is still hidden from read-only profiles in the message it was sent in, also after the
    // next rotation (which drops only secrets whose log has expired).
    await gw.request('PATCH', `/v2/outgoingWebhooks/${webhook.Id}/regenerateSecret`, { token });
    expect(before!.body).toContain(webhook.Secret);
    const reader = await gw.token({ readOnly: true, name: 'Rotation reader', email: 'rotation-reader@acme.com' });
    const read = await gw.graphql(`query($id: ID!) { message(id: $id) { body } }`, { id: before!.headers['webhook-id'] }, reader);
    expect(read.body.data.message.body).not.toContain(webhook.Secret);
    expect(JSON.parse(read.body.data.message.body)).toMatchObject({ secret: '[secret hidden]' });
  });

  it('retries a failing receiver and succeeds on the third attempt', async () => {
    const path = `/flaky-${counter + 1}`;
    receiver.script(path, { status: 500 }, { status: 502 });
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('flaky')`);
    const calls = await waitFor(async () => (receiver.callsTo(path).length >= 3 ? receiver.callsTo(path) : undefined));
    const delivered = await waitForStatus(calls[0]!.headers['webhook-id'] as string, 'SUCCEEDED');
    expect(delivered.attempts.map((attempt: any) => [attempt.attempt, attempt.httpStatus, attempt.succeeded])).toEqual([
      [1, 500, false],
      [2, 502, false],
      [3, 200, true],
    ]);
    expect(new Set(calls.map((call) => call.headers['webhook-id'])).size).toBe(1); // one message, deduplicable
  });

  it('gives up a call that is still answering after DELIVERY_TIMEOUT_MS, and retries it', async () => {
    const path = `/drip-${counter + 1}`;
    // A byte every 200 ms keeps undici's own idle timeouts from firing: only the call's deadline ends it.
    receiver.script(path, { status: 200, dripMs: 200 });
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('slow')`);
    const calls = await waitFor(async () => (receiver.callsTo(path).length >= 2 ? receiver.callsTo(path) : undefined));
    const delivered = await waitForStatus(calls[0]!.headers['webhook-id'] as string, 'SUCCEEDED');
    expect(delivered.attempts.map((attempt: any) => [attempt.attempt, attempt.succeeded, attempt.error])).toEqual([
      [1, false, 'no answer within 2000 ms'],
      [2, true, null],
    ]);
    // The deadline counts from when the call started, a little before the receiver saw it: then 200 ms ± 20% to the retry.
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(1800);
  });

  it('does not send (nor load) a body over 10 MB, and records why', async () => {
    const path = `/huge-${counter + 1}`;
    const { table, webhook } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values (repeat('x', 10 * 1024 * 1024))`);
    const messageId = await waitFor(async () => {
      const listed = await gw.graphql(`query($id: ID!) { messages(webhookId: $id) { edges { node { id } } } }`, { id: webhook.Id }, token);
      return listed.body.data.messages.edges[0]?.node.id as string | undefined;
    });
    const failed = await waitForStatus(messageId, 'FAILED');
    expect(failed.attempts.map((attempt: any) => [attempt.attempt, attempt.succeeded, attempt.error])).toEqual([
      [1, false, 'the body is larger than 10485760 bytes; not sent'],
    ]);
    expect(receiver.callsTo(path)).toHaveLength(0);
  });

  it('sends large bodies whole, holding at most 32 MB of them at once', { timeout: 60_000 }, async () => {
    const path = `/large-${counter + 1}`;
    receiver.answer(path, { status: 200, delayMs: 1000 });
    const { table, webhook } = await setup([path], { CallThrottling: 100 });
    const noteBytes = 3 * 1024 * 1024;
    await app.unsafe(`insert into "${table}" (note) select repeat(chr(96 + n), ${noteBytes}) from generate_series(1, 24) n`);
    await waitFor(async () => (receiver.callsTo(path).length >= 24 ? true : undefined), 40_000, 'every large call');
    const calls = receiver.callsTo(path);
    const notes = calls.map((call) => (verify(webhook.Secret, call) as { data: { id: number; note: string }[] }).data[0]!);
    expect(notes.map((row) => row.id).sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, index) => index + 1)); // each once
    for (const row of notes) expect(row.note).toBe(String.fromCharCode(96 + row.id).repeat(noteBytes));
    // Each call is held 1 s, so calls that arrive within a second of each other were in flight
    // together: 10 bodies of 3 MB fit in 32 MB. Without the bound, 100 calls a second put 20 in flight.
    expect(maxInWindow(calls.map((call) => call.at), 1000)).toBeLessThanOrEqual(10);
  });

  it('logs the first 4 KB of a long answer', async () => {
    const path = `/talkative-${counter + 1}`;
    receiver.script(path, { status: 500, body: 'é'.repeat(3000) + 'x'.repeat(10_000) }); // 6,000 bytes of two-byte characters first
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('long answer')`);
    const calls = await waitFor(async () => (receiver.callsTo(path).length >= 2 ? receiver.callsTo(path) : undefined));
    const { attempts } = await waitFor(async () => {
      const found = await message(calls[0]!.headers['webhook-id'] as string);
      return found.attempts.length >= 2 ? found : undefined;
    });
    // 4,096 bytes are 2,048 of the two-byte characters.
    expect(attempts[0].responseBody).toBe('é'.repeat(2048));
    expect(attempts[0].httpStatus).toBe(500);
  });

  it('logs an answer whose body holds NUL bytes, which Postgres text cannot store', async () => {
    const path = `/binary-${counter + 1}`;
    receiver.script(path, { status: 200, body: 'ok\u0000\u0000done' });
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('binary')`);
    const calls = await waitFor(async () => (receiver.callsTo(path).length >= 1 ? receiver.callsTo(path) : undefined));
    const delivered = await waitForStatus(calls[0]!.headers['webhook-id'] as string, 'SUCCEEDED');
    expect(delivered.attempts.map((attempt: any) => [attempt.succeeded, attempt.responseBody])).toEqual([[true, 'ok\uFFFD\uFFFDdone']]);
  });

  it('honours Retry-After on 429 (seconds) and 503 (an HTTP date)', async () => {
    const path = `/busy-${counter + 1}`;
    receiver.script(path, { status: 429, headers: { 'retry-after': '2' } });
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('later')`);
    const calls = await waitFor(async () => (receiver.callsTo(path).length >= 2 ? receiver.callsTo(path) : undefined));
    // The schedule says 200 ms; the receiver asked for 2 s, and got it, not the schedule's next steps either.
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(1900);
    expect(calls[1]!.at - calls[0]!.at).toBeLessThan(5000);
    await waitForStatus(calls[0]!.headers['webhook-id'] as string, 'SUCCEEDED');

    // An HTTP date, 4 s ahead (to the second: it has no finer resolution): the retry comes then.
    const unavailable = `/unavailable-${counter + 1}`;
    const second = await setup([unavailable]);
    const until = new Date(Math.ceil((Date.now() + 4000) / 1000) * 1000);
    receiver.script(unavailable, { status: 503, headers: { 'retry-after': until.toUTCString() } });
    await app.unsafe(`insert into "${second.table}" (note) values ('after maintenance')`);
    const [, up] = await waitFor(async () => (receiver.callsTo(unavailable).length >= 2 ? receiver.callsTo(unavailable) : undefined));
    expect(up!.at).toBeGreaterThanOrEqual(until.getTime() - 100);
    expect(up!.at).toBeLessThan(until.getTime() + 3000);
  });

  it('keeps a scheduled retry waiting when its job runs again early', async () => {
    const { Queue } = await import('bullmq');
    const { Redis } = await import('ioredis');
    const path = `/early-${counter + 1}`;
    receiver.script(path, { status: 429, headers: { 'retry-after': '3' } });
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('patience')`);
    const [first] = await waitFor(async () => (receiver.callsTo(path).length === 1 ? receiver.callsTo(path) : undefined));
    const [delivery] = await waitFor(async () => {
      const rows = await app<{ id: string; generation: number }[]>`select id, generation from webhook_gateway.deliveries
        where message_id = ${first!.headers['webhook-id'] as string} and status = 'RETRY_SCHEDULED'`;
      return rows.length === 1 ? rows : undefined;
    });

    // As if the worker had crashed before delaying the job: the job is back, due at once.
    const [installation] = await app<{ id: string }[]>`select id from webhook_gateway.installation`;
    const connection = new Redis({ maxRetriesPerRequest: null });
    const queue = new Queue('deliveries', { connection, prefix: `webhook-gateway:${installation!.id}` });
    try {
      const jobId = `d${delivery!.id}-g${delivery!.generation}`;
      await waitFor(async () => ((await queue.getJobState(jobId)) === 'delayed' ? true : undefined));
      await queue.remove(jobId);
      await queue.add('deliver', { deliveryId: Number(delivery!.id), generation: delivery!.generation }, { jobId });
    } finally {
      await queue.close();
      connection.disconnect();
    }

    const [, second] = await waitFor(async () => (receiver.callsTo(path).length === 2 ? receiver.callsTo(path) : undefined));
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(2900);
  });

  it('stops at 410 Gone, and ends Dead after the last attempt with every attempt recorded', async () => {
    const gone = `/gone-${counter + 1}`;
    const broken = `/broken-${counter + 1}`;
    receiver.answer(gone, { status: 410 });
    receiver.answer(broken, { status: 500 });
    const { table, webhook } = await setup([gone, broken]);
    await app.unsafe(`insert into "${table}" (note) values ('doomed')`);
    const messageId = await waitFor(async () => receiver.callsTo(gone)[0]?.headers['webhook-id'] as string | undefined);
    const failed = await waitForStatus(messageId, 'FAILED');
    expect(receiver.callsTo(gone)).toHaveLength(1);
    expect(receiver.callsTo(broken)).toHaveLength(4); // the first attempt and three retries
    const byUrl = (path: string) => failed.attempts.filter((attempt: any) => attempt.url.endsWith(path));
    expect(byUrl(gone).map((attempt: any) => attempt.httpStatus)).toEqual([410]);
    expect(byUrl(gone)[0].error).toMatch(/410/);
    expect(byUrl(broken).map((attempt: any) => attempt.attempt)).toEqual([1, 2, 3, 4]);
    expect(byUrl(broken).at(-1).error).toMatch(/gave up after 4 attempts/);
    const stats = await gw.request('GET', `/v2/outgoingWebhooks/${webhook.Id}`, { token });
    expect(stats.body).toMatchObject({ Calls: 5, Errors: 5 });
    const deliveries = await app`select url, status, attempts from webhook_gateway.deliveries where message_id = ${messageId} order by url`;
    expect(deliveries).toEqual([
      { url: `${receiver.url}${broken}`, status: 'DEAD', attempts: 4 },
      { url: `${receiver.url}${gone}`, status: 'DEAD', attempts: 1 },
    ]);

    // Redelivery sends it again, with the whole schedule: one receiver fails once more, then both answer.
    receiver.answer(gone, { status: 200 });
    receiver.script(broken, { status: 500 });
    receiver.answer(broken, { status: 200 });
    // Over REST here (GraphQL's redeliverMessage is used below): 202 with the message, pending again.
    const redelivered = await gw.request('POST', `/v2/outgoingWebhooks/${webhook.Id}/messages/${messageId}/redeliver`, { token });
    expect(redelivered.status).toBe(202);
    expect(redelivered.body).toMatchObject({ Id: messageId, WebhookId: webhook.Id, Status: 'PENDING' });
    const elsewhere = await gw.request('POST', `/v2/outgoingWebhooks/${(await setup([`/another-${counter + 1}`])).webhook.Id}/messages/${messageId}/redeliver`, { token });
    expect(elsewhere.status).toBe(404); // not that webhook's message
    const succeeded = await waitForStatus(messageId, 'SUCCEEDED');
    expect(succeeded.attempts.filter((attempt: any) => attempt.succeeded)).toHaveLength(2);
    expect(receiver.callsTo(gone)).toHaveLength(2);
    // A new series of attempts, numbered from 1.
    const brokenAfter = succeeded.attempts.filter((attempt: any) => attempt.url.endsWith(broken));
    expect(brokenAfter.map((attempt: any) => [attempt.attempt, attempt.httpStatus])).toEqual([
      [1, 500],
      [2, 500],
      [3, 500],
      [4, 500],
      [1, 500],
      [2, 200],
    ]);
  });

  it('redelivers the failed messages of a webhook since a time, to the URLs that failed', async () => {
    const ok = `/fine-${counter + 1}`;
    const bad = `/down-${counter + 1}`;
    receiver.answer(bad, { status: 410 });
    const { table, webhook } = await setup([ok, bad]);
    const since = new Date(Date.now() - 1000).toISOString();
    await app.unsafe(`insert into "${table}" (note) select 'n' || n from generate_series(1, 3) n`);
    await waitFor(async () => {
      const failed = await gw.graphql(`query($id: ID!) { messages(webhookId: $id, status: FAILED) { edges { cursor } } }`, { id: webhook.Id }, token);
      return failed.body.data.messages.edges.length === 3 ? true : undefined;
    });
    receiver.answer(bad, { status: 204 });
    const response = await gw.request('POST', `/integrations/rest/v3/outgoingWebhooks/${webhook.Id}/redeliverFailed`, {
      token,
      body: { Since: since },
    });
    expect(response.status).toBe(202);
    expect(response.body).toEqual({ Count: 3 });
    await waitFor(async () => (receiver.callsTo(bad).length === 6 ? true : undefined));
    expect(receiver.callsTo(ok)).toHaveLength(3); // the URL that had succeeded is not called again

    // In GraphQL: one message fails, then two more; only the two made since the later time are sent again.
    const failedCount = async () => {
      const failed = await gw.graphql(`query($id: ID!) { messages(webhookId: $id, status: FAILED) { edges { cursor } } }`, { id: webhook.Id }, token);
      return failed.body.data.messages.edges.length as number;
    };
    await waitFor(async () => ((await failedCount()) === 0 ? true : undefined));
    receiver.answer(bad, { status: 410 });
    await app.unsafe(`insert into "${table}" (note) values ('earlier')`);
    await waitFor(async () => ((await failedCount()) === 1 ? true : undefined));
    const later = new Date().toISOString();
    await app.unsafe(`insert into "${table}" (note) select 'm' || n from generate_series(1, 2) n`);
    await waitFor(async () => ((await failedCount()) === 3 ? true : undefined));
    receiver.answer(bad, { status: 204 });
    const viaGraphql = await gw.graphql(
      `mutation($id: ID!, $since: String!) { redeliverFailedMessages(webhookId: $id, since: $since) }`,
      { id: webhook.Id, since: later },
      token,
    );
    expect(viaGraphql.body).toEqual({ data: { redeliverFailedMessages: 2 } });
    await waitFor(async () => (receiver.callsTo(bad).length === 6 + 3 + 2 ? true : undefined));
    await waitFor(async () => {
      const done = await gw.graphql(`query($id: ID!) { messages(webhookId: $id, status: SUCCEEDED) { edges { cursor } } }`, { id: webhook.Id }, token);
      return done.body.data.messages.edges.length === 5 ? true : undefined;
    });
    expect(await failedCount()).toBe(1); // the earlier one
    expect(receiver.callsTo(ok)).toHaveLength(6);

    for (const bad of ['yesterday', '1', '2026-11-27T09:00:00']) {
      // A time without its zone would be read in the server's: refused like the rest.
      const badSince = await gw.request('POST', `/v2/outgoingWebhooks/${webhook.Id}/redeliverFailed`, { token, body: { Since: bad } });
      expect(badSince.status).toBe(400);
      expect(badSince.body.Message).toMatch(/^Since: /);
    }
    const unknown = await gw.graphql(`mutation { redeliverFailedMessages(webhookId: "zzzzzz", since: "2026-01-01") }`, {}, token);
    expect(unknown.body.errors?.[0]?.extensions?.code).toBe('ObjectNotFound');
  });

  it('cancels the deliveries to a URL taken off the webhook, and redelivers to the URLs it has now', async () => {
    const kept = `/kept-${counter + 1}`;
    const removed = `/removed-${counter + 1}`;
    const added = `/added-${counter + 1}`;
    receiver.answer(removed, { status: 503, headers: { 'retry-after': '3' } }); // its retry waits 3 s
    const { table, webhook } = await setup([kept, removed]);
    await app.unsafe(`insert into "${table}" (note) values ('moving')`);
    const messageId = await waitFor(async () => receiver.callsTo(removed)[0]?.headers['webhook-id'] as string | undefined);
    await waitFor(async () => {
      const [row] = await app`select status from webhook_gateway.deliveries where message_id = ${messageId} and url like ${'%' + removed}`;
      return row?.status === 'RETRY_SCHEDULED' ? true : undefined;
    });
    const urls = [`${receiver.url}${kept}`, `${receiver.url}${added}`];
    const updated = await gw.request('PUT', `/v2/outgoingWebhooks/${webhook.Id}`, { token, body: { OutgoingUrls: urls } });
    expect(updated.status).toBe(200);
    expect((await waitForStatus(messageId, 'SUCCEEDED')).attempts).toHaveLength(2); // the kept URL's call and the removed one's first
    await new Promise((resolve) => setTimeout(resolve, 3500));
    expect(receiver.callsTo(removed)).toHaveLength(1); // its retry was cancelled
    expect(receiver.callsTo(added)).toHaveLength(0); // the message was made before the URL was added

    const redelivered = await gw.graphql(`mutation($id: ID!) { redeliverMessage(id: $id) { status } }`, { id: messageId }, token);
    expect(redelivered.body.data.redeliverMessage.status).toBe('PENDING');
    await waitFor(async () => (receiver.callsTo(added).length === 1 && receiver.callsTo(kept).length === 2 ? true : undefined));
    const after = await waitForStatus(messageId, 'SUCCEEDED');
    expect(after.attempts.map((attempt: any) => new URL(attempt.url).pathname).sort()).toEqual([added, kept, kept, removed].sort());
    expect(receiver.callsTo(removed)).toHaveLength(1);
  });

  it('no longer counts a failure at a URL taken off the webhook: the message is settled by the URLs it has', async () => {
    const gone = `/gone-then-removed-${counter + 1}`;
    const kept = `/kept-after-removal-${counter + 1}`;
    receiver.answer(gone, { status: 410 }); // dead at once
    const { table, webhook } = await setup([gone, kept]);
    await app.unsafe(`insert into "${table}" (note) values ('failed there')`);
    const messageId = await waitFor(async () => receiver.callsTo(gone)[0]?.headers['webhook-id'] as string | undefined);
    await waitForStatus(messageId, 'FAILED');

    const updated = await gw.request('PUT', `/v2/outgoingWebhooks/${webhook.Id}`, { token, body: { OutgoingUrls: [`${receiver.url}${kept}`] } });
    expect(updated.status).toBe(200);
    const settled = await message(messageId);
    expect(settled.status).toBe('SUCCEEDED');
    expect(settled.attempts.map((attempt: any) => [new URL(attempt.url).pathname, attempt.httpStatus]).sort()).toEqual([[gone, 410], [kept, 200]].sort());
    const redelivered = await gw.request('POST', `/v2/outgoingWebhooks/${webhook.Id}/redeliverFailed`, { token, body: { Since: '2020-01-01T00:00:00Z' } });
    expect(redelivered.body).toEqual({ Count: 0 });
  });

  it('checks the address connected to at send time (DNS rebinding)', async () => {
    const strict = await startTestGateway({ RETRY_SCHEDULE: '100ms' });
    const strictApp = postgres(strict.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const strictToken = await strict.token();
      await strictApp`create table "Rebind" (id serial primary key)`;
      const hook = await strict.request('POST', '/v2/outgoingWebhooks', {
        token: strictToken,
        body: { Name: 'rebind', OutgoingUrls: ['https://rebind.example.com/hook'] },
      });
      await strict.request('POST', `/v2/outgoingWebhooks/${hook.body.Id}/events`, {
        token: strictToken,
        body: { EventType: 'table.recordInsert', ObjectName: 'Rebind' },
      });
      // The name was accepted when saved; now it resolves to this machine (as a rebinding DNS would make it).
      const local = `http://localhost:${new URL(receiver.url).port}/rebound`;
      await strictApp`update webhook_gateway.webhook_urls set url = ${local}`;
      await strictApp`insert into "Rebind" default values`;
      const attempts = await waitFor(async () => {
        const rows = await strictApp`select error from webhook_gateway.delivery_attempts`;
        return rows.length >= 2 ? rows : undefined;
      });
      expect(attempts[0]!.error).toMatch(/resolves to a forbidden \(loopback, private or reserved\) address/);
      expect(attempts[0]!.error).not.toMatch(/127\.0\.0\.1|::1/);
      expect(receiver.callsTo('/rebound')).toHaveLength(0);
    } finally {
      await strictApp.end();
      await strict.stop();
    }
  });

  /**
   * A webhook with a call in flight, and a transaction that holds its delivery as the attempt
   * recorder does while it records the call: the delivery's new state first, then (the attempt's
   * or the count's foreign key) a lock on its message or webhook, here taken by the test.
   */
  async function recordingInFlight(label: string) {
    const path = `/${label}-${counter + 1}`;
    receiver.script(path, { status: 200, delayMs: 3000 });
    const { table, webhook } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('in flight')`);
    const [call] = await waitFor(async () => (receiver.callsTo(path).length === 1 ? receiver.callsTo(path) : undefined));
    const messageId = call!.headers['webhook-id'] as string;
    const recorder = await app.reserve();
    await recorder`begin`;
    await recorder`set local lock_timeout = '500ms'`; // a deadlock would take deadlock_timeout (1 s) to be found
    await recorder`update webhook_gateway.deliveries set updated_at = now() where message_id = ${messageId}`;
    const end = async () => {
      await recorder`rollback`.catch(() => {});
      recorder.release();
    };
    return { path, webhook, messageId, recorder, end };
  }

  it('deletes a webhook while an attempt of its is being recorded, without a deadlock', async () => {
    const { webhook, messageId, recorder, end } = await recordingInFlight('recorded-while-deleted');
    try {
      const deleting = gw.request('DELETE', `/v2/outgoingWebhooks/${webhook.Id}`, { token });
      await blockedOnLock(); // the delete waits for the delivery's row
      await recorder`insert into webhook_gateway.delivery_attempts (message_id, webhook_id, event_id, url, attempt, attempted_at, succeeded, duration_ms)
        select id, webhook_id, event_id, 'x', 1, now(), true, 1 from webhook_gateway.messages where id = ${messageId}`;
      await recorder`commit`;
      expect((await deleting).status).toBe(204);
    } finally {
      await end();
    }
    expect(await app`select 1 from webhook_gateway.messages where id = ${messageId}`).toHaveLength(0);
  });

  it('takes a URL off a webhook while an attempt of its is being recorded, without a deadlock', async () => {
    const { path, webhook, messageId, recorder, end } = await recordingInFlight('recorded-while-moved');
    try {
      const moving = gw.request('PUT', `/v2/outgoingWebhooks/${webhook.Id}`, { token, body: { OutgoingUrls: [`${receiver.url}${path}-elsewhere`] } });
      await blockedOnLock();
      // The first count of a new hour: its foreign key locks the webhook's row.
      await recorder`insert into webhook_gateway.delivery_counts (webhook_id, event_id, hour, calls)
        select webhook_id, event_id, date_trunc('hour', now()) + interval '5 hours', 1 from webhook_gateway.messages where id = ${messageId}`;
      await recorder`commit`;
      expect((await moving).status).toBe(200);
    } finally {
      await end();
    }
    const [delivery] = await app`select status from webhook_gateway.deliveries where message_id = ${messageId}`;
    expect(delivery!.status).toBe('CANCELLED');
  });

  it('cancels pending deliveries when the webhook is deleted', async () => {
    const path = `/slow-${counter + 1}`;
    const { table, webhook } = await setup([path], { CallThrottling: 2 });
    await app.unsafe(`insert into "${table}" (note) select 'n' || n from generate_series(1, 20) n`);
    await waitFor(async () => (receiver.callsTo(path).length >= 2 ? true : undefined));
    expect((await gw.request('DELETE', `/v2/outgoingWebhooks/${webhook.Id}`, { token })).status).toBe(204);
    const atDelete = receiver.callsTo(path).length;
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(receiver.callsTo(path).length).toBeLessThanOrEqual(atDelete + 1); // at most one already in flight
  });
});

describe('a busy receiver', () => {
  it('gets no call that waited in the worker for a place to its URL once the webhook is deleted', async () => {
    const path = `/busy-deleted-${counter + 1}`;
    receiver.script(path, ...Array.from({ length: 300 }, () => ({ status: 200, delayMs: 800 })));
    const { table, webhook } = await setup([path], { CallThrottling: 100 });
    await app.unsafe(`insert into "${table}" (note) select 'n' || n from generate_series(1, 300) n`);
    // 100 calls a second held 0.8 s each would be 80 at once: the URL's 50 places are taken, and
    // the next calls wait in the worker, loaded, for one.
    await waitFor(async () => (receiver.callsTo(path).length >= 70 ? true : undefined));
    expect((await gw.request('DELETE', `/v2/outgoingWebhooks/${webhook.Id}`, { token })).status).toBe(204);
    const deletedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    // Those in flight at the deletion had arrived before it (or, on a loaded machine, within a
    // moment of it); a call arriving a second after it would be one that waited (some 60 a second).
    const startedAfter = receiver.callsTo(path).filter((call) => call.at > deletedAt + 1000);
    expect(startedAfter.length).toBeLessThanOrEqual(2);
  });

  it('lets the calls behind a throttled call it sent back go on, not wait for it', { timeout: 60_000 }, async () => {
    const path = `/busy-line-${counter + 1}`;
    receiver.answer(path, { status: 200, delayMs: 1000 });
    const { table } = await setup([path], { CallThrottling: 100 });
    await app.unsafe(`insert into "${table}" (note) select 'n' || n from generate_series(1, 400) n`);
    // 100 a second, each held a second, against 50 places to the URL: its line of waiting calls
    // fills, and calls are sent back to the queue, out of their line. Those behind one must not
    // wait for it: they would hold the URL's places for the line's grace (2 s), the receiver idle.
    const rows = () => receiver.callsTo(path).map((call) => JSON.parse(call.body).data[0].id as number);
    await waitFor(async () => (new Set(rows()).size === 400 ? true : undefined), 40_000, 'every call');
    const calls = receiver.callsTo(path);
    expect(calls).toHaveLength(400);
    const sentBack = rows().filter((id, index, ids) => index > 0 && id < ids[index - 1]!);
    expect(sentBack.length).toBeGreaterThan(0); // some did go back, and came out of turn
    const longestPause = Math.max(...calls.slice(1).map((call, index) => call.at - calls[index]!.at));
    // A call holds its place 1 s, so when 50 started together the next starts just over 1 s later
    // (0.5 s alone, 1.02 s once in a full run); those behind a sent-back call that wait for it pause
    // 1.6–2 s (the line's grace; 1.87 s with the line not left).
    expect(longestPause).toBeLessThan(1500);
  });
});

describe('a hanging receiver', () => {
  it('takes at most 50 calls at once per URL and does not hold up another webhook, on the same host too', { timeout: 60_000 }, async () => {
    // Its own gateway: calls time out after 20 s here, so that a hanging call stays open for the whole test;
    // and no throttle spaces the hanging webhook's messages: they are all due at once.
    const patient = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true', DELIVERY_TIMEOUT_MS: '20000', CALL_THROTTLING_MAX: '100000' });
    const patientApp = postgres(patient.databaseUrl, { max: 2, onnotice: () => {} });
    const hanging = new Receiver();
    hanging.answer('/hang', { status: 200, delayMs: 25_000 });
    hanging.answer('/hang-too', { status: 200, delayMs: 25_000 });
    await hanging.start();
    try {
      const patientToken = await patient.token();
      await createWatchedWebhook(patient, patientToken, patientApp, { table: 'Hangs', urls: [`${hanging.url}/hang`] });
      await createWatchedWebhook(patient, patientToken, patientApp, { table: 'HangsToo', urls: [`${hanging.url}/hang-too`] });
      // On the same host as the hanging URLs: their 100 open calls must not leave it no connection.
      await createWatchedWebhook(patient, patientToken, patientApp, { table: 'Flows', urls: [`${hanging.url}/flows`] });
      // More hanging messages than the worker runs at once (200): without a bound per URL they would take every slot.
      await patientApp`insert into "Hangs" (note) select 'h' || n from generate_series(1, 300) n`;
      await patientApp`insert into "HangsToo" (note) select 'h' || n from generate_series(1, 100) n`;
      await waitFor(async () => (hanging.callsTo('/hang').length >= 50 && hanging.callsTo('/hang-too').length >= 50 ? true : undefined));
      await patientApp`insert into "Flows" (note) select 'f' || n from generate_series(1, 20) n`;
      await waitFor(async () => (hanging.callsTo('/flows').length === 20 ? true : undefined), 15_000, 'the other webhook to be delivered');
      expect(hanging.callsTo('/hang')).toHaveLength(50); // none has been answered yet
      expect(hanging.callsTo('/hang-too')).toHaveLength(50);
    } finally {
      await patientApp.end();
      await hanging.stop();
      await patient.stop();
    }
  });
  it('takes at most three quarters of the worker with several hanging URLs: another webhook still goes through', { timeout: 60_000 }, async () => {
    const patient = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true', DELIVERY_TIMEOUT_MS: '20000', CALL_THROTTLING_MAX: '100000' });
    const patientApp = postgres(patient.databaseUrl, { max: 2, onnotice: () => {} });
    const hanging = new Receiver();
    const paths = ['/dead-1', '/dead-2', '/dead-3', '/dead-4', '/dead-5'];
    for (const path of paths) hanging.answer(path, { status: 200, delayMs: 25_000 });
    await hanging.start();
    try {
      const patientToken = await patient.token();
      // One webhook multicast to five URLs of a host that takes calls and never answers: at 50
      // each they would hold 250 calls, more than the worker's 200 slots.
      await createWatchedWebhook(patient, patientToken, patientApp, { table: 'Dead', urls: paths.map((path) => `${hanging.url}${path}`) });
      await createWatchedWebhook(patient, patientToken, patientApp, { table: 'Alive', urls: [`${receiver.url}/alive`] });
      await patientApp`insert into "Dead" (note) select 'd' || n from generate_series(1, 100) n`;
      const hangingCalls = () => paths.reduce((sum, path) => sum + hanging.callsTo(path).length, 0);
      await waitFor(async () => (hangingCalls() >= 150 ? true : undefined), 15_000, 'the hanging URLs to take their share');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await patientApp`insert into "Alive" (note) select 'a' || n from generate_series(1, 20) n`;
      await waitFor(async () => (receiver.callsTo('/alive').length === 20 ? true : undefined), 15_000, 'the other webhook to be delivered');
      // 150 places for URLs that do not answer, and a first call to each is always let through.
      expect(hangingCalls()).toBeLessThanOrEqual(150 + paths.length);
      for (const path of paths) expect(hanging.callsTo(path).length).toBeLessThanOrEqual(50);
    } finally {
      await patientApp.end();
      await hanging.stop();
      await patient.stop();
    }
  });
});

describe('a slow receiver', () => {
  it('does not fill the worker with calls waiting for it, and gets them all', { timeout: 90_000 }, async () => {
    // Answers each call after 1–2 s, the calls finishing one by one (never 500 ms without one: it
    // is slow, not hanging). 50 calls at once to it bring about 35 a second, against 500 waiting.
    const gateway = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true', CALL_THROTTLING_MAX: '100000' });
    const gatewayApp = postgres(gateway.databaseUrl, { max: 2, onnotice: () => {} });
    const slow = new Receiver();
    slow.script('/slow', ...Array.from({ length: 500 }, (_, n) => ({ status: 200, delayMs: 1000 + (n % 50) * 20 })));
    await slow.start();
    try {
      const gatewayToken = await gateway.token();
      await createWatchedWebhook(gateway, gatewayToken, gatewayApp, { table: 'Slow', urls: [`${slow.url}/slow`] });
      await createWatchedWebhook(gateway, gatewayToken, gatewayApp, { table: 'Quick', urls: [`${receiver.url}/quick`] });
      await gatewayApp`insert into "Slow" (note) select 's' || n from generate_series(1, 500) n`;
      // Its calls have been finishing for a while: without a bound on the calls waiting for it, all
      // 200 of the worker's slots would be taken by them by now, and the other webhook's messages
      // would queue behind the rest of its backlog (a few hundred calls, several seconds).
      await waitFor(async () => (slow.callsTo('/slow').length >= 100 ? true : undefined), 20_000, 'the slow receiver to answer');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const slowCallsBefore = slow.callsTo('/slow').length;
      await gatewayApp`insert into "Quick" (note) select 'q' || n from generate_series(1, 20) n`;
      await waitFor(async () => (receiver.callsTo('/quick').length === 20 ? true : undefined), 15_000, 'the other webhook to be delivered');
      // 2 in a run of this file alone (about 35 come a second); waiting behind the slow backlog, 170 and more.
      expect(slow.callsTo('/slow').length - slowCallsBefore).toBeLessThan(100);
      // The calls sent back to the queue are made later: every message reaches the slow receiver.
      await waitFor(async () => (slow.callsTo('/slow').length >= 500 ? true : undefined), 60_000, 'every slow call');
      await waitFor(async () => {
        const [row] = await gatewayApp`select count(*)::int as n from webhook_gateway.deliveries where status = 'SUCCEEDED' and url like '%/slow'`;
        return row!.n === 500 ? true : undefined;
      }, 10_000, 'every slow delivery recorded');
    } finally {
      await gatewayApp.end();
      await slow.stop();
      await gateway.stop();
    }
  });
});

describe('retention', () => {
  it('deletes settled messages and attempts older than LOG_RETENTION_DAYS, and keeps the rest', async () => {
    const { deleteExpiredRecords } = await import('../src/delivery/retention');
    const path = `/retention-${counter + 1}`;
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) select 'r' || n from generate_series(1, 4) n`);
    const ids = await waitFor(async () => {
      const calls = receiver.callsTo(path);
      return calls.length === 4 ? calls.map((call) => call.headers['webhook-id'] as string) : undefined;
    });
    await Promise.all(ids.map((id) => waitForStatus(id, 'SUCCEEDED')));
    const [old, pending, recent, attemptedLately] = ids as [string, string, string, string];
    await app`update webhook_gateway.messages set created_at = now() - interval '40 days' where id in ${app([old, pending, attemptedLately])}`;
    await app`update webhook_gateway.deliveries set status = 'RETRY_SCHEDULED', next_attempt_at = now() + interval '1 day' where message_id = ${pending}`;
    await app`update webhook_gateway.delivery_attempts set attempted_at = now() - interval '40 days' where message_id in ${app([old, pending])}`;

    const deleted = await deleteExpiredRecords(gw.gateway.database.db, 30);
    expect(deleted).toMatchObject({ messages: 1, attempts: 1 });
    const left = await app`select id from webhook_gateway.messages where id in ${app(ids)} order by id`;
    expect(left.map((row) => row.id).sort()).toEqual([pending, recent, attemptedLately].sort());
    expect((await message(pending)).attempts).toEqual([]); // its old attempt went, the message stays while pending
    expect((await message(recent)).attempts).toHaveLength(1);
    // An old message attempted within the retention (a late retry, a redelivery) keeps its attempts as long.
    expect((await message(attemptedLately)).attempts).toHaveLength(1);
  });

  it('is cleaned up by a dispatcher as LOG_RETENTION_DAYS says, from its start on', async () => {
    const path = `/retention-days-${counter + 1}`;
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) select 'd' || n from generate_series(1, 2) n`);
    const [aged, fresh] = await waitFor(async () => {
      const calls = receiver.callsTo(path);
      return calls.length === 2 ? calls.map((call) => call.headers['webhook-id'] as string) : undefined;
    });
    await Promise.all([aged, fresh].map((id) => waitForStatus(id!, 'SUCCEEDED')));
    await app`update webhook_gateway.messages set created_at = now() - interval '2 days' where id = ${aged!}`;
    await app`update webhook_gateway.delivery_attempts set attempted_at = now() - interval '2 days' where message_id = ${aged!}`;
    // A second dispatcher on the same database, keeping a day: its first round cleans up.
    const dispatcher = await startTestGateway({ ROLES: 'dispatcher', LOG_RETENTION_DAYS: '1', ALLOW_PRIVATE_TARGETS: 'true' }, gw.databaseUrl);
    try {
      await waitFor(async () => ((await app`select 1 from webhook_gateway.messages where id = ${aged!}`).length === 0 ? true : undefined));
      expect(await app`select 1 from webhook_gateway.delivery_attempts where message_id = ${aged!}`).toHaveLength(0);
      expect((await message(fresh!)).attempts).toHaveLength(1);
    } finally {
      await dispatcher.stop();
    }
  });

  it('keeps an old message redelivered while the clean-up runs', async () => {
    const { deleteExpiredRecords } = await import('../src/delivery/retention');
    const path = `/retention-redelivered-${counter + 1}`;
    const { table } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('old')`);
    const [call] = await waitFor(async () => (receiver.callsTo(path).length === 1 ? receiver.callsTo(path) : undefined));
    const id = call!.headers['webhook-id'] as string;
    await waitForStatus(id, 'SUCCEEDED');
    await app`update webhook_gateway.messages set created_at = now() - interval '40 days' where id = ${id}`;

    // A redelivery under way (as redeliverMessage writes it) while the clean-up runs: the clean-up
    // neither waits for it nor deletes the message.
    const deleted = await app.begin(async (tx) => {
      await tx`select 1 from webhook_gateway.messages where id = ${id} for no key update`;
      await tx`update webhook_gateway.deliveries set status = 'QUEUED', generation = generation + 1, attempts = 0, queued = false
        where message_id = ${id}`;
      return deleteExpiredRecords(gw.gateway.database.db, 30);
    });
    expect(deleted.messages).toBe(0);
    expect(await app`select id from webhook_gateway.messages where id = ${id}`).toHaveLength(1);
    await waitFor(async () => (receiver.callsTo(path).length === 2 ? true : undefined));
    await waitForStatus(id, 'SUCCEEDED');
  });
});

describe('counts', () => {
  it('counts messages, calls and errors per webhook and per event for the last 30 days, by the hour', async () => {
    const { deleteExpiredRecords } = await import('../src/delivery/retention');
    const ok = `/counts-${counter + 1}/ok`;
    const gone = `/counts-${counter + 1}/gone`;
    receiver.answer(gone, { status: 410 }); // fails for good on the first attempt
    const { table, webhook } = await setup([ok, gone]);
    await gw.request('POST', `/v2/outgoingWebhooks/${webhook.Id}/events`, {
      token,
      body: { EventType: 'table.recordDelete', ObjectName: table },
    });
    const listed = await gw.request('GET', `/v2/outgoingWebhooks/${webhook.Id}/events`, { token });
    const eventOf = (type: string) => listed.body.Result.find((event: any) => event.Type === type).Id as string;
    const [inserts, deletes] = [eventOf('table.recordInsert'), eventOf('table.recordDelete')];
    const stats = async (path = '') => {
      const { body } = await gw.request('GET', `/v2/outgoingWebhooks/${webhook.Id}${path}`, { token });
      return { Messages: body.Messages, Calls: body.Calls, Errors: body.Errors };
    };

    // This hour's count already holds some: new messages and calls are added to it, not written over it.
    await app`insert into webhook_gateway.delivery_counts (webhook_id, event_id, hour, messages, calls, errors)
      values (${webhook.Id}, ${inserts}, date_trunc('hour', now(), 'UTC'), 10, 20, 5)`;
    await app.unsafe(`insert into "${table}" (note) values ('one'), ('two')`);
    await app.unsafe(`delete from "${table}" where note = 'one'`);
    await waitFor(async () => ((await stats()).Calls === 26 ? true : undefined), 15_000, 'six more calls counted');
    expect(await stats()).toEqual({ Messages: 13, Calls: 26, Errors: 8 });
    expect(await stats(`/events/${inserts}`)).toEqual({ Messages: 12, Calls: 24, Errors: 7 });
    expect(await stats(`/events/${deletes}`)).toEqual({ Messages: 1, Calls: 2, Errors: 1 });

    // Counts from 29 days ago are shown, from 40 days ago not (and the clean-up deletes them).
    await app`insert into webhook_gateway.delivery_counts (webhook_id, event_id, hour, messages, calls, errors) values
      (${webhook.Id}, ${inserts}, date_trunc('hour', now() - interval '29 days'), 1, 1, 0),
      (${webhook.Id}, ${inserts}, date_trunc('hour', now() - interval '40 days'), 100, 100, 100)`;
    expect(await stats(`/events/${inserts}`)).toEqual({ Messages: 13, Calls: 25, Errors: 7 });
    // Counts do not depend on the rows: the attempts' retention leaves them as they are.
    await app`update webhook_gateway.delivery_attempts set attempted_at = now() - interval '40 days'
      where message_id in (select id from webhook_gateway.messages where webhook_id = ${webhook.Id})`;
    const deleted = await deleteExpiredRecords(gw.gateway.database.db, 30);
    expect(deleted).toMatchObject({ attempts: 6, counts: 1 });
    expect(await stats()).toEqual({ Messages: 14, Calls: 27, Errors: 8 });

    // Counts are GraphQL Ints: a sum past 2^31 - 1 is shown as that.
    await app`insert into webhook_gateway.delivery_counts (webhook_id, event_id, hour, messages, calls, errors)
      values (${webhook.Id}, ${deletes}, date_trunc('hour', now() - interval '2 hours', 'UTC'), 0, 2147483647, 0)`;
    expect(await stats()).toEqual({ Messages: 14, Calls: 2147483647, Errors: 8 });

    // Deleting the webhook deletes its counts.
    await gw.request('DELETE', `/v2/outgoingWebhooks/${webhook.Id}`, { token });
    expect(await app`select 1 from webhook_gateway.delivery_counts where webhook_id = ${webhook.Id}`).toHaveLength(0);
  });
});

describe('attempt log', () => {
  /** A multicast message delivered to both URLs, and its two deliveries (ordered by URL). */
  async function deliveredTwice(prefix: string) {
    const { table, webhook } = await setup([`${prefix}/a`, `${prefix}/b`]);
    await app.unsafe(`insert into "${table}" (note) values ('twice')`);
    const [call] = await waitFor(async () => (receiver.callsTo(`${prefix}/a`).length === 1 ? receiver.callsTo(`${prefix}/a`) : undefined));
    const messageId = call!.headers['webhook-id'] as string;
    await waitForStatus(messageId, 'SUCCEEDED');
    const rows = await app<{ id: string; url: string; event_id: string; message_id: string }[]>`
      select d.id, d.url, m.event_id, d.message_id from webhook_gateway.deliveries d join webhook_gateway.messages m on m.id = d.message_id
      where d.message_id = ${messageId} order by d.url`;
    return { webhook, messageId, rows };
  }

  /** Records attempts as a worker does: those recorded together go in one batch. */
  async function recorderFor(webhookId: string) {
    const { AttemptRecorder } = await import('../src/delivery/recorder');
    const { createLogger } = await import('../src/logger');
    const recorder = new AttemptRecorder(gw.gateway.database.db, createLogger('silent'));
    return (
      row: { id: string; url: string; event_id: string; message_id: string },
      attempt: number,
      result: { ok: boolean; httpStatus: number; error?: string },
    ) =>
      recorder.record({
        deliveryId: Number(row.id),
        generation: 0,
        messageId: row.message_id,
        webhookId,
        eventId: row.event_id,
        url: row.url,
        attempt,
        attemptedAt: new Date(),
        result: { ...result, durationMs: 5 },
        status: result.ok ? 'SUCCEEDED' : 'DEAD',
        nextAttemptAt: null,
      });
  }

  it('settles a multicast message whose last two deliveries are recorded at the same time', async () => {
    const { webhook, messageId, rows } = await deliveredTwice(`/race-${counter + 1}`);
    const [a, b] = [rows[0]!, rows[1]!];
    // Both deliveries under way again: as before their outcomes came in.
    await app`update webhook_gateway.deliveries set status = 'SENDING' where message_id = ${messageId}`;
    expect((await message(messageId)).status).toBe('PENDING');
    const [recordA, recordB] = [await recorderFor(webhook.Id), await recorderFor(webhook.Id)];

    // b's record starts first and waits on a lock held here; a's is recorded and committed
    // meanwhile; then b's goes on, still seeing a as under way (its statement began before).
    let recordedB: Promise<boolean> | undefined;
    await app.begin(async (tx) => {
      await tx`select 1 from webhook_gateway.deliveries where id = ${b.id} for update`;
      recordedB = recordB(b, 2, { ok: true, httpStatus: 200 });
      await blockedOnLock();
      expect(await recordA(a, 2, { ok: true, httpStatus: 200 })).toBe(true);
    });
    expect(await recordedB).toBe(true);
    expect((await message(messageId)).status).toBe('SUCCEEDED');
  });

  it('writes the attempts recorded together in one transaction', async () => {
    const { webhook, messageId, rows } = await deliveredTwice(`/batched-${counter + 1}`);
    await app`update webhook_gateway.deliveries set status = 'SENDING' where message_id = ${messageId}`;
    const record = await recorderFor(webhook.Id);
    expect(await Promise.all(rows.map((row) => record(row, 2, { ok: true, httpStatus: 200 })))).toEqual([true, true]);
    // Rows written by one transaction carry its id (xmin): one id for both attempts and both deliveries.
    const written = await app`
      select xmin::text as tx from webhook_gateway.delivery_attempts where message_id = ${messageId} and attempt = 2
      union all select xmin::text from webhook_gateway.deliveries where message_id = ${messageId}`;
    expect(written).toHaveLength(4);
    expect(new Set(written.map((row) => row.tx)).size).toBe(1);
  });

  it('does not apply an outcome for an attempt already recorded (a stalled job run twice)', async () => {
    const { webhook, rows } = await deliveredTwice(`/twice-${counter + 1}`);
    const record = await recorderFor(webhook.Id);
    // Attempt 1 succeeded; the same attempt, run again elsewhere and failed, comes in late.
    expect(await record(rows[0]!, 1, { ok: false, httpStatus: 500 })).toBe(false);
    const [delivery] = await app`select status, attempts from webhook_gateway.deliveries where id = ${rows[0]!.id}`;
    expect(delivery).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
  });

  /** Two messages delivered once each to one URL (the first to keep, the second to delete), and their deliveries. */
  async function keptAndDeleted(path: string) {
    const { table, webhook } = await setup([path]);
    await app.unsafe(`insert into "${table}" (note) values ('kept'), ('deleted')`);
    const ids = await waitFor(async () => (receiver.callsTo(path).length === 2 ? receiver.callsTo(path).map((call) => call.headers['webhook-id'] as string) : undefined));
    await Promise.all(ids.map((id) => waitForStatus(id, 'SUCCEEDED')));
    const rows = await app<{ id: string; url: string; event_id: string; message_id: string }[]>`
      select d.id, d.url, m.event_id, d.message_id from webhook_gateway.deliveries d join webhook_gateway.messages m on m.id = d.message_id
      where d.message_id in ${app(ids)} order by m.seq`;
    return { webhook, kept: rows[0]!, deleted: rows[1]! };
  }

  it('stores the rest of a batch whose other message is deleted with its webhook meanwhile', async () => {
    const { webhook, kept, deleted } = await keptAndDeleted(`/deleted-${counter + 1}`);
    const record = await recorderFor(webhook.Id);

    // The deletion holds its locks while the batch is written; the batch's statement saw the
    // message still there, and its foreign key check fails once the deletion commits.
    const { recorded } = await app.begin(async (tx) => {
      await tx`delete from webhook_gateway.messages where id = ${deleted.message_id}`;
      const both = Promise.all([record(kept, 2, { ok: true, httpStatus: 200 }), record(deleted, 2, { ok: true, httpStatus: 200 })]);
      await blockedOnLock();
      return { recorded: both }; // not awaited here: the batch waits for this transaction's commit
    });

    expect(await recorded).toEqual([true, false]);
    const logged = (await message(kept.message_id)).attempts.map((attempt: any) => attempt.attempt);
    expect(logged).toEqual([1, 2]);
  });

  it('skips the attempt of a message already deleted with its webhook, and stores the rest of its batch', async () => {
    const { webhook, kept, deleted } = await keptAndDeleted(`/gone-before-${counter + 1}`);
    const record = await recorderFor(webhook.Id);

    await app`delete from webhook_gateway.messages where id = ${deleted.message_id}`;
    expect(await Promise.all([record(kept, 2, { ok: true, httpStatus: 200 }), record(deleted, 2, { ok: true, httpStatus: 200 })])).toEqual([true, false]);
    expect((await message(kept.message_id)).attempts.map((attempt: any) => attempt.attempt)).toEqual([1, 2]);
    expect(await app`select 1 from webhook_gateway.delivery_attempts where message_id = ${deleted.message_id}`).toHaveLength(0);
  });

  it('writes again an attempt whose record lost a deadlock, instead of failing its job (which would call again)', async () => {
    const { webhook, messageId, rows } = await deliveredTwice(`/deadlock-${counter + 1}`);
    const record = await recorderFor(webhook.Id);
    const holder = postgres(gw.databaseUrl, { max: 1, onnotice: () => {} });
    let recorded: Promise<boolean> | undefined;
    try {
      await holder.begin(async (tx) => {
        await tx`set local deadlock_timeout = '10s'`; // so that the recording finds the deadlock, and loses it
        await tx`update webhook_gateway.delivery_counts set calls = calls where webhook_id = ${webhook.Id}`;
        recorded = record(rows[0]!, 2, { ok: true, httpStatus: 200 });
        await blockedOnLock(); // the recording holds its delivery and waits for the count
        await tx`update webhook_gateway.deliveries set updated_at = now() where id = ${rows[0]!.id}`;
      });
    } finally {
      await holder.end();
    }
    expect(await recorded).toBe(true);
    const second = (await message(messageId)).attempts.filter((attempt: any) => attempt.attempt === 2);
    expect(second).toHaveLength(1);
  });

  it('stores the rest of a batch when Postgres refuses one attempt, and that one without its text', async () => {
    const { webhook, messageId, rows } = await deliveredTwice(`/refused-${counter + 1}`);
    // Second attempts for both URLs, recorded in one batch; the second one's error holds a NUL.
    const record = await recorderFor(webhook.Id);
    const applied = await Promise.all([
      record(rows[0]!, 2, { ok: true, httpStatus: 200 }),
      record(rows[1]!, 2, { ok: false, httpStatus: 500, error: 'bad\u0000text' }),
    ]);

    expect(applied).toEqual([true, true]);
    const logged = (await message(messageId)).attempts
      .filter((attempt: any) => attempt.attempt === 2)
      .sort((a: any, b: any) => a.url.localeCompare(b.url));
    expect(logged.map((attempt: any) => [attempt.url, attempt.succeeded, attempt.httpStatus])).toEqual([
      [rows[0]!.url, true, 200],
      [rows[1]!.url, false, 500],
    ]);
    expect(logged[1].error).toMatch(/^the attempt's error and answer text could not be stored \(.*0x00/);
  });

  it('holds an attempt Postgres cannot store for now (disk full) and stores it once it can, without calling again', async () => {
    const path = `/disk-full-${counter + 1}`;
    const { table } = await setup([path]);
    const refusing = `refuse_attempts_${counter}`;
    // Postgres refuses this URL's attempt records, as it does all writes when its disk is full.
    await app.unsafe(`create function public.${refusing}() returns trigger language plpgsql as $$
      begin if new.url like '%${path}' then raise exception 'could not extend file' using errcode = 'disk_full'; end if; return new; end $$`);
    await app.unsafe(`create trigger ${refusing} before insert on webhook_gateway.delivery_attempts for each row execute function public.${refusing}()`);
    let id: string;
    try {
      await app.unsafe(`insert into "${table}" (note) values ('full')`);
      const [call] = await waitFor(async () => (receiver.callsTo(path).length === 1 ? receiver.callsTo(path) : undefined));
      id = call!.headers['webhook-id'] as string;
      // A failed job would run again 2 s later and call again; the held attempt makes no new call.
      await new Promise((resolve) => setTimeout(resolve, 4500));
      expect(receiver.callsTo(path)).toHaveLength(1);
      expect((await message(id)).status).toBe('PENDING');
    } finally {
      await app.unsafe(`drop trigger ${refusing} on webhook_gateway.delivery_attempts`);
      await app.unsafe(`drop function public.${refusing}()`);
    }
    const delivered = await waitForStatus(id, 'SUCCEEDED');
    expect(delivered.attempts).toHaveLength(1);
    expect(receiver.callsTo(path)).toHaveLength(1);
  });

  it('does not store an attempt twice when the answer to its committed record was lost with the connection', async () => {
    const { webhook, messageId, rows } = await deliveredTwice(`/lost-answer-${counter + 1}`);
    const proxy = await answerCuttingProxy(new URL(gw.databaseUrl));
    const { connectPostgres } = await import('../src/db/database');
    const { AttemptRecorder } = await import('../src/delivery/recorder');
    const { createLogger } = await import('../src/logger');
    const database = connectPostgres(gw.databaseUrl.replace(/@[^/]+\//, `@127.0.0.1:${proxy.port}/`), 1);
    try {
      const recorder = new AttemptRecorder(database.db, createLogger('silent'));
      proxy.cutAfterCommandTag('UPDATE'); // the record's statement commits; its answer never arrives
      const applied = await recorder.record({
        deliveryId: Number(rows[0]!.id),
        generation: 0,
        messageId,
        webhookId: webhook.Id,
        eventId: rows[0]!.event_id,
        url: rows[0]!.url,
        attempt: 2,
        attemptedAt: new Date(),
        result: { ok: true, httpStatus: 200, durationMs: 5 },
        status: 'SUCCEEDED',
        nextAttemptAt: null,
      });
      expect(proxy.cuts).toBe(1);
      expect(applied).toBe(true);
      const second = (await message(messageId)).attempts.filter((attempt: any) => attempt.attempt === 2);
      expect(second).toHaveLength(1);
      const [counted] = await app<[{ calls: number }]>`select sum(calls)::int as calls from webhook_gateway.delivery_counts where webhook_id = ${webhook.Id}`;
      expect(counted.calls).toBe(3); // two first attempts and this one, once
    } finally {
      await database.close();
      proxy.close();
    }
  });
});

/**
 * A TCP proxy to Postgres that can drop a connection right after Postgres has answered a statement
 * with the given command tag (so after its commit), before the answer reaches the client.
 */
async function answerCuttingProxy(target: URL) {
  const net = await import('node:net');
  let cutTag: string | undefined;
  let cuts = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    let pending = Buffer.alloc(0); // server bytes not yet split into whole messages
    upstream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      let whole = 0;
      while (pending.length - whole >= 5 && pending.length - whole >= 1 + pending.readInt32BE(whole + 1)) {
        const length = pending.readInt32BE(whole + 1);
        if (cutTag && pending[whole] === 0x43 /* CommandComplete */ && pending.toString('utf8', whole + 5, whole + 1 + length - 1).startsWith(cutTag)) {
          cutTag = undefined;
          cuts++;
          client.destroy();
          upstream.destroy();
          return;
        }
        whole += 1 + length;
      }
      client.write(pending.subarray(0, whole));
      pending = pending.subarray(whole);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    cutAfterCommandTag(tag: string) {
      cutTag = tag;
    },
    get cuts() {
      return cuts;
    },
    close() {
      server.close();
    },
  };
}
