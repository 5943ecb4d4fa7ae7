import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { secretKey, signMessage } from '../src/delivery/signature';
import { decideRetry, parseRetryAfter } from '../src/delivery/retry';
import { afterRotation, MAX_PREVIOUS_SECRETS } from '../src/webhooks/secrets';
import { maxInWindow } from './support/receiver';

describe('Standard Webhooks signatures', () => {
  it('match the specification\'s known-answer vector', () => {
    const key = secretKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    expect(signMessage([key], 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')).toBe(
      'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    );
  });

  it('verify with the standardwebhooks package, with either secret during rotation', () => {
    const current = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const previous = 'whsec_dGhlIG9sZCBzZWNyZXQgZm9yIHRlc3Rpbmc=';
    const timestamp = Math.floor(Date.now() / 1000);
    const body = '{"hello":"world"}';
    const headers = {
      'webhook-id': 'msg_1',
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signMessage([secretKey(current), secretKey(previous)], 'msg_1', timestamp, body),
    };
    expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
    expect(new Webhook(current).verify(body, headers)).toEqual({ hello: 'world' });
    expect(new Webhook(previous).verify(body, headers)).toEqual({ hello: 'world' });
    expect(() => new Webhook('whsec_b3RoZXIgc2VjcmV0IGVudGlyZWx5IGRpZmZlcmVudA==').verify(body, headers)).toThrow();
  });
});

describe('secret rotation', () => {
  const now = Date.parse('2026-12-02T10:00:00Z');
  const day = 24 * 3_600_000;
  const times = { overlapMs: day, keptForMs: 30 * day };

  it('puts the replaced secret first, keeps the earlier ones for the retention after their signing ended, and drops older ones', () => {
    const previous = [
      { secret: 'whsec_c', expiresAt: '2026-12-02T20:00:00.000Z' }, // still signing
      { secret: 'whsec_b', expiresAt: '2026-11-20T10:00:00.000Z' }, // signing ended 12 days ago
      { secret: 'whsec_a', expiresAt: '2026-11-01T10:00:00.000Z' }, // ended 31 days ago
    ];
    expect(afterRotation('whsec_d', previous, now, times)).toEqual([
      { secret: 'whsec_d', expiresAt: '2026-12-03T10:00:00.000Z' },
      { secret: 'whsec_c', expiresAt: '2026-12-02T20:00:00.000Z' },
      { secret: 'whsec_b', expiresAt: '2026-11-20T10:00:00.000Z' },
    ]);
  });

  it(`keeps at most ${MAX_PREVIOUS_SECRETS}, the newest`, () => {
    let previous = afterRotation('whsec_0', [], now, times);
    for (let n = 1; n <= MAX_PREVIOUS_SECRETS + 2; n++) previous = afterRotation(`whsec_${n}`, previous, now + n, times);
    expect(previous).toHaveLength(MAX_PREVIOUS_SECRETS);
    expect(previous[0]!.secret).toBe(`whsec_${MAX_PREVIOUS_SECRETS + 2}`);
    expect(previous.at(-1)!.secret).toBe('whsec_3');
  });
});

describe('retry decisions', () => {
  const schedule = [5_000, 300_000, 1_800_000];

  it('follow the schedule with ±20% jitter', () => {
    expect(decideRetry(1, schedule, 500, undefined, () => 0)).toEqual({ retry: true, delayMs: 4_000 });
    expect(decideRetry(1, schedule, 500, undefined, () => 1)).toEqual({ retry: true, delayMs: 6_000 });
    expect(decideRetry(2, schedule, undefined, undefined, () => 0.5)).toEqual({ retry: true, delayMs: 300_000 });
  });

  it('honour Retry-After on 429 and 503 only, when it is later than the schedule', () => {
    expect(decideRetry(1, schedule, 429, 42_000)).toEqual({ retry: true, delayMs: 42_000 });
    expect(decideRetry(1, schedule, 503, 7_000, () => 0.5)).toEqual({ retry: true, delayMs: 7_000 });
    expect(decideRetry(1, schedule, 500, 7_000, () => 0.5)).toEqual({ retry: true, delayMs: 5_000 });
    // Sooner than the schedule's step: the step, so that a short (or 0) Retry-After every time
    // cannot use up the schedule in seconds. At most a day.
    expect(decideRetry(1, schedule, 503, 0, () => 0.5)).toEqual({ retry: true, delayMs: 5_000 });
    expect(decideRetry(2, schedule, 429, 2_000, () => 0.5)).toEqual({ retry: true, delayMs: 300_000 });
    expect(decideRetry(1, schedule, 429, 3 * 86_400_000)).toEqual({ retry: true, delayMs: 86_400_000 });
  });

  it('stop on 410 Gone and after the last step', () => {
    expect(decideRetry(1, schedule, 410, undefined)).toMatchObject({ retry: false });
    expect(decideRetry(4, schedule, 500, undefined)).toMatchObject({ retry: false });
  });

  it('parse Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('120')).toBe(120_000);
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:27:00 GMT'))).toBe(60_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    for (const junk of ['-1', '1.5', '2026-01-01']) expect(parseRetryAfter(junk)).toBeUndefined(); // Date.parse would read them as dates
  });
});

it('counts the most calls in any one-second window', () => {
  expect(maxInWindow([0, 100, 999, 1000, 1999])).toBe(3);
  expect(maxInWindow([0, 250, 500, 750, 1000, 1250])).toBe(4);
});

it('makes time-ordered version 7 UUIDs for message ids', async () => {
  const { newTimeOrderedUuid } = await import('../src/db/ids');
  const earlier = newTimeOrderedUuid(1_700_000_000_000);
  const later = newTimeOrderedUuid(1_700_000_000_001);
  expect(earlier).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(earlier < later).toBe(true);
  expect(parseInt(earlier.replace(/-/g, '').slice(0, 12), 16)).toBe(1_700_000_000_000);
});
