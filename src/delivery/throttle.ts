import type { Redis } from 'ioredis';

// Books the webhook's next free call slot (GCRA): the key holds the time the next slot opens,
// in microseconds (so that limits above 1000/s keep their spacing). Returns the caller's wait
// in ms. Redis' clock serves every process.
const RESERVE_SLOT = `
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(next_free, now)
redis.call('SET', KEYS[1], string.format('%.0f', slot + interval), 'PX', math.ceil((slot + interval - now) / 1000) + 1000)
return math.floor((slot - now) / 1000)
`;

// The strict guard at send time: a log of the calls of the last window; a call is allowed
// while fewer than `limit` are in it, else the answer is how long until the oldest leaves.
const ACQUIRE_PERMIT = `
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
`;

/**
 * The calls-per-second limit of a webhook, held across processes: slots spaced a little wider
 * than 1/limit (releases jitter by milliseconds), and a sliding one-second-plus-margin log
 * checked right before each call, so that no one-second window at the receiver holds more.
 */
export class Throttle {
  static readonly WINDOW_MS = 1000;
  /** Margin on the window and the spacing, against timing jitter between sender and receiver. */
  static readonly MARGIN = 0.1;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand('gwReserveSlot', { numberOfKeys: 1, lua: RESERVE_SLOT });
    redis.defineCommand('gwAcquirePermit', { numberOfKeys: 1, lua: ACQUIRE_PERMIT });
  }

  /** Books the webhook's next slot; resolves to the wait in ms until it. */
  async reserveSlot(webhookId: string, limit: number): Promise<number> {
    const command = this.redis as unknown as { gwReserveSlot(key: string, interval: number): Promise<number> };
    return command.gwReserveSlot(this.slotKey(webhookId), this.slotInterval(limit));
  }

  private slotKey = (webhookId: string) => `${this.prefix}:slot:${webhookId}`;
  /** Microseconds between slots. */
  private slotInterval = (limit: number) => Math.ceil((Throttle.WINDOW_MS * 1000 * (1 + Throttle.MARGIN)) / limit);

  /** Books slots for many calls at once, in the order given (one round trip). */
  async reserveSlots(requests: readonly { webhookId: string; limit: number }[]): Promise<number[]> {
    const pipeline = this.redis.pipeline() as unknown as {
      gwReserveSlot(key: string, interval: number): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const { webhookId, limit } of requests) pipeline.gwReserveSlot(this.slotKey(webhookId), this.slotInterval(limit));
    const results = (await pipeline.exec()) ?? [];
    return results.map(([error, wait]) => {
      if (error) throw error;
      return Number(wait);
    });
  }

  /** Resolves to 0 when a call may go now (and counts it), else the ms to wait before asking again. */
  async acquirePermit(webhookId: string, limit: number, callId: string): Promise<number> {
    const window = Math.ceil(Throttle.WINDOW_MS * (1 + Throttle.MARGIN));
    const command = this.redis as unknown as {
      gwAcquirePermit(key: string, limit: number, window: number, member: string): Promise<number>;
    };
    return command.gwAcquirePermit(`${this.prefix}:calls:${webhookId}`, limit, window, callId);
  }
}
