import type { Redis } from 'ioredis';
import { RateLimitedError } from '../errors';
import type { Principal } from './principal';

const WINDOW_MS = 60_000;

// Counts a request in the client's current one-minute window; the key lives a little longer than the window.
const COUNT_REQUEST = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
`;

/**
 * The API rate limit (CONTRACT §9's 429): each client profile may make `perMinute` requests per
 * clock minute, counted in Redis so that the limit holds across every API process. While Redis
 * is unreachable requests are let through: the API keeps working without it.
 */
export class ApiRateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly perMinute: number,
  ) {
    redis.defineCommand('gwCountRequest', { numberOfKeys: 1, lua: COUNT_REQUEST });
  }

  /** Counts the request; throws TooManyRequests when the client is over its limit. */
  async admit(principal: Principal): Promise<void> {
    if (this.perMinute === 0 || this.redis.status !== 'ready') return;
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    const command = this.redis as unknown as { gwCountRequest(key: string, ttlMs: number): Promise<number> };
    let count: number;
    try {
      count = await command.gwCountRequest(`${this.prefix}:api-requests:${principal.clientId}:${window}`, WINDOW_MS + 5000);
    } catch {
      return;
    }
    if (count > this.perMinute) {
      const retryAfterSeconds = Math.max(1, Math.ceil(((window + 1) * WINDOW_MS - now) / 1000));
      throw new RateLimitedError(
        `This client made more than ${this.perMinute} requests this minute (API_RATE_LIMIT); try again in ${retryAfterSeconds} s`,
        retryAfterSeconds,
      );
    }
  }
}
