/** What to do after a failed attempt: try again after `delayMs`, or give up on this URL. */
export type RetryDecision = { retry: true; delayMs: number } | { retry: false; reason: string };

const JITTER = 0.2;
/** A receiver's Retry-After is honoured up to this long. */
const MAX_RETRY_AFTER_MS = 24 * 3_600_000;

/** Parses Retry-After: delay-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  // An HTTP date names its day and month; without them Date.parse takes '-1' or '1.5' for dates too.
  if (!/[A-Za-z]{3}/.test(header)) return undefined;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * Attempt `attempt` (1-based) failed with `httpStatus`. The schedule's step for it, ±20% jitter,
 * or the receiver's Retry-After on 429/503 if that is later: the retry never comes before the
 * receiver asked, and a short Retry-After every time (a deployment, a strict rate limiter) does
 * not use the schedule up faster than it runs. 410 Gone stops; past the schedule the delivery is dead.
 */
export function decideRetry(
  attempt: number,
  schedule: readonly number[],
  httpStatus: number | undefined,
  retryAfterMs: number | undefined,
  random = Math.random,
): RetryDecision {
  if (httpStatus === 410) return { retry: false, reason: 'the receiver answered 410 Gone' };
  const step = schedule[attempt - 1];
  if (step === undefined) return { retry: false, reason: `gave up after ${attempt} attempts` };
  const scheduled = Math.round(step * (1 - JITTER + 2 * JITTER * random()));
  if ((httpStatus === 429 || httpStatus === 503) && retryAfterMs !== undefined) {
    return { retry: true, delayMs: Math.max(scheduled, Math.min(retryAfterMs, MAX_RETRY_AFTER_MS)) };
  }
  return { retry: true, delayMs: scheduled };
}
