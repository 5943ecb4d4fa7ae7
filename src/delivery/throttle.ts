import type { Redis } from 'ioredis';

// Books the webhook's next free call slots (GCRA), one for each call of a batch, in order: KEYS[1]
// holds the time the next slot opens, in microseconds (so that limits above 1000/s keep their
// spacing); Redis' clock serves every process. KEYS[2] holds the webhook's newest throttle epoch,
// raised by the first booking in a newer one. Also draws each call's place in line for its URL
// (KEYS[3..]: hashes, `next` drawn, `served` let go, `at` when the last let go left (the next
// may go half a slot later), `holder` the call whose saying it left sets `at`, `queued` the
// last ticket that queued for its slot), which the permit keeps in order. ARGV: the spacing,
// the time to live of lines and epoch, the epoch, the slack (ms: a slot further out queues),
// then for each call the index of its URL's line among KEYS[3..]. Returns {wait in ms, ticket}
// for each call, flattened.
const RESERVE_SLOTS = `
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local slack = tonumber(ARGV[4])
local calls = #ARGV - 4
if tonumber(ARGV[3]) >= tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
local first = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local next_free = first + interval * calls
redis.call('SET', KEYS[1], string.format('%.0f', next_free), 'PX', math.ceil((next_free - now) / 1000) + 1000)
local per_line = {}
for i = 5, #ARGV do
  local line = tonumber(ARGV[i])
  per_line[line] = (per_line[line] or 0) + 1
end
local ticket = {}
for line, count in pairs(per_line) do
  ticket[line] = redis.call('HINCRBY', KEYS[line + 2], 'next', count) - count + 1
  redis.call('PEXPIRE', KEYS[line + 2], ARGV[2])
end
local queued = {}
local result = {}
for i = 5, #ARGV do
  local line = tonumber(ARGV[i])
  local wait = math.floor((first + interval * (i - 5) - now) / 1000)
  result[#result + 1] = wait
  result[#result + 1] = ticket[line]
  if wait > slack then queued[line] = ticket[line] end
  ticket[line] = ticket[line] + 1
end
for line, last in pairs(queued) do
  redis.call('HSET', KEYS[line + 2], 'queued', last)
end
return result
`;

// The strict guard at send time, for the calls of one webhook asked for in the same tick, in
// order. Calls whose slots were booked in an older throttle epoch than the webhook's newest
// (KEYS[2]) are refused: the limit changed, and their deliveries were booked afresh. Then the
// line: a call whose predecessors to the same URL (KEYS[3..], its index in ARGV) have not all
// gone, or whose predecessor went less than `gap` ms ago (calls that woke late together would
// otherwise leave at the same instant and race on their connections), waits for them, unless
// it need not (it did not queue for its slot, or it is overdue, since a predecessor that is
// gone or stuck must not hold the line). A call with queued calls behind it counts as gone only
// once its worker says it left (CALL_LEFT), or `left wait` ms after its permit if that never
// comes: a worker busy between the permit and the call must not let the next one, in another
// process, get there first. Then the window: a log of the calls of the last window (KEYS[1]); a
// call is allowed while fewer than `limit` are in it, else the answer is how long until the
// oldest leaves. A call let into a window over half full is to say when it left too, so that
// the log counts it from then (a call that left late would otherwise drop out of the window
// early, and a receiver would see one too many). ARGV: limit, window, the lines' time to live,
// the calls' epoch, gap, left wait, then per call: line index, ticket, may overtake (1/0), log
// member. Returns per call 0 (allowed, and counted), -3 (allowed, and to say when it left), -1
// (in line), -2 (superseded) or the ms to wait.
const ACQUIRE_PERMITS = `
if tonumber(ARGV[4]) < tonumber(redis.call('GET', KEYS[2]) or '0') then
  local superseded = {}
  for i = 7, #ARGV, 4 do superseded[#superseded + 1] = -2 end
  return superseded
end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local gap = tonumber(ARGV[5])
local left_wait = tonumber(ARGV[6])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local counted = count
local served = {}
local went = {}
local last_queued = {}
local holder = {}
local moved = {}
local result = {}
for i = 7, #ARGV, 4 do
  local line = tonumber(ARGV[i]) + 2
  local ticket = tonumber(ARGV[i + 1])
  if served[line] == nil then
    local state = redis.call('HMGET', KEYS[line], 'served', 'at', 'queued')
    served[line] = tonumber(state[1] or '0')
    went[line] = tonumber(state[2] or '0')
    last_queued[line] = tonumber(state[3] or '0')
  end
  if ticket > 0 and ARGV[i + 2] == '0' and (ticket > served[line] + 1 or now - went[line] < gap) then
    result[#result + 1] = -1
  elseif count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[i + 3])
    count = count + 1
    local allowed = 0
    if ticket > served[line] then
      served[line] = ticket
      went[line] = now
      holder[line] = 0
      if last_queued[line] > ticket then
        went[line] = now + left_wait
        holder[line] = ticket
        allowed = -3
      end
      moved[line] = true
    end
    if count * 2 > limit then allowed = -3 end
    result[#result + 1] = allowed
  else
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    result[#result + 1] = math.max(1, tonumber(oldest[2]) + window - now)
  end
end
if count > counted then redis.call('PEXPIRE', KEYS[1], window) end
for line in pairs(moved) do
  redis.call('HSET', KEYS[line], 'served', served[line], 'at', went[line], 'holder', holder[line])
  redis.call('PEXPIRE', KEYS[line], ARGV[3])
end
return result
`;

// A call has left (its request is with its connection): the window's log (KEYS[2]) counts it
// from now (again, if it left so late that the log had let it go), and if it holds its line
// (KEYS[1]), the next may go `gap` ms from now. ARGV: ticket, the line's time to live, the call's
// log member, the window.
const CALL_LEFT = `
local state = redis.call('HMGET', KEYS[1], 'holder', 'at')
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
if tonumber(state[1] or '0') == tonumber(ARGV[1]) and tonumber(state[2] or '0') > now then
  redis.call('HSET', KEYS[1], 'at', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('ZADD', KEYS[2], 'CH', now, ARGV[3]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 0
`;

// A call that gives up its place (to book a later slot) lets its successors in line go.
const LEAVE_LINE = `
local served = tonumber(redis.call('HGET', KEYS[1], 'served') or '0')
if tonumber(ARGV[1]) > served then
  redis.call('HSET', KEYS[1], 'served', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`;

/**
 * Whether a call may go now; if not, how long to wait and why: in line, or for room in the
 * window; or not at all under its slot (`superseded`: the limit changed since it was booked).
 */
export type Permit =
  /**
   * `saysWhenLeft`: its worker is to say when the call left (`callLeft`). Queued calls behind it
   * wait for that, and the window counts it from then: the webhook is at or near its limit.
   */
  | { granted: true; saysWhenLeft: boolean }
  | { granted: false; waitMs: number; inLine: boolean; superseded: boolean };

interface PermitCall {
  url: string;
  ticket: number;
  mayOvertake: boolean;
  queued: boolean;
  callId: string;
  resolve(permit: Permit): void;
  reject(error: unknown): void;
}

/** A booked call slot: when it opens (ms, this process' clock) and its place in line for its URL. */
export interface Slot {
  at: number;
  ticket: number;
  /** The calls-per-second limit the slot was spaced for. */
  limit: number;
  /** The webhook's throttle epoch the slot was booked in: its clock and its lines. */
  epoch: number;
  /**
   * Whether the call queued behind others for its slot (the webhook is at its limit). Only such
   * calls wait in line: order is promised for the excess; calls free to go at once run
   * concurrently anyway, and waiting for each other would only slow them down.
   */
  queued: boolean;
}

/** A slot this close is not worth a trip through BullMQ's delayed set (and is not queueing). */
export const SLOT_SLACK_MS = 25;

/** A URL's line is forgotten after a day without calls. */
const LINE_TTL_MS = 86_400_000;

/** What a slot is booked for: a call to `url`, under the webhook's limit, in its throttle epoch. */
export interface SlotRequest {
  webhookId: string;
  url: string;
  limit: number;
  epoch: number;
}

/**
 * The calls-per-second limit of a webhook, held across processes: slots spaced a little wider
 * than 1/limit (releases jitter by milliseconds), and a sliding one-second-plus-margin log
 * checked right before each call (near the limit, counting each call from when it left its
 * worker), so that no one-second window at the receiver holds more.
 * Calls to a URL go in the order their slots were booked, even when jobs wake late and bunch up
 * in several processes at once. A change of the limit starts a new throttle epoch, with a clock
 * and lines of its own; the window's log is the webhook's, whatever the epoch.
 */
export class Throttle {
  static readonly WINDOW_MS = 1000;
  /** Margin on the window and the spacing, against timing jitter between sender and receiver. */
  static readonly MARGIN = 0.1;
  /** How long past its slot a call waits for an earlier call to its URL before going anyway. */
  static readonly LINE_GRACE_MS = 2000;
  /** How long a call that holds its URL's line holds it if its worker never says it left (it died). */
  static readonly LEFT_WAIT_MS = 1000;
  /**
   * A call that leaves this long after its permit says when it left, however far under the limit
   * the webhook is: counted from its permit, it would drop out of the window too early (a slow
   * connect, a pause), and let one call too many in.
   */
  static readonly LEFT_LATE_MS = Throttle.WINDOW_MS * Throttle.MARGIN;
  /** The window's log looks this far back. */
  private static readonly LOG_WINDOW_MS = Math.ceil(Throttle.WINDOW_MS * (1 + Throttle.MARGIN));

  /** Permits asked for in this tick, per webhook, limit and epoch. */
  private readonly asked = new Map<string, { webhookId: string; limit: number; epoch: number; calls: PermitCall[] }>();
  private askScheduled = false;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand('gwReserveSlots', { lua: RESERVE_SLOTS }); // as many keys as the batch has URLs
    redis.defineCommand('gwAcquirePermits', { lua: ACQUIRE_PERMITS }); // as many keys as the calls have URLs
    redis.defineCommand('gwLeaveLine', { numberOfKeys: 1, lua: LEAVE_LINE });
    redis.defineCommand('gwCallLeft', { numberOfKeys: 2, lua: CALL_LEFT });
  }

  /** Books the webhook's next slot for a call. */
  async reserveSlot(request: SlotRequest): Promise<Slot> {
    const [slot] = await this.reserveSlots([request]);
    return slot!;
  }

  /**
   * Books slots for many calls at once, each webhook's in the order given: one script per
   * webhook (its calls' slots and places in line drawn together), all in one round trip.
   */
  async reserveSlots(requests: readonly SlotRequest[]): Promise<Slot[]> {
    const groups = new Map<string, { webhookId: string; limit: number; epoch: number; lines: Map<string, number>; indexes: number[] }>();
    requests.forEach(({ webhookId, url, limit, epoch }, index) => {
      const groupKey = `${webhookId}\u0000${limit}\u0000${epoch}`;
      let group = groups.get(groupKey);
      if (!group) groups.set(groupKey, (group = { webhookId, limit, epoch, lines: new Map(), indexes: [] }));
      if (!group.lines.has(url)) group.lines.set(url, group.lines.size + 1);
      group.indexes.push(index);
    });
    const pipeline = this.redis.pipeline() as unknown as {
      gwReserveSlots(numberOfKeys: number, ...keysAndArgs: (string | number)[]): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const { webhookId, limit, epoch, lines, indexes } of groups.values()) {
      const lineKeys = [...lines.keys()].map((url) => this.lineKey(webhookId, epoch, url));
      const lineOfCall = indexes.map((index) => lines.get(requests[index]!.url)!);
      pipeline.gwReserveSlots(
        2 + lineKeys.length,
        this.slotKey(webhookId, epoch),
        this.epochKey(webhookId),
        ...lineKeys,
        this.slotInterval(limit),
        LINE_TTL_MS,
        epoch,
        SLOT_SLACK_MS,
        ...lineOfCall,
      );
    }
    const now = Date.now();
    const results = (await pipeline.exec()) ?? [];
    const slots: Slot[] = new Array(requests.length);
    [...groups.values()].forEach(({ limit, epoch, indexes }, groupIndex) => {
      const [error, reply] = results[groupIndex]!;
      if (error) throw error;
      const pairs = reply as number[];
      indexes.forEach((index, position) => {
        const wait = Number(pairs[position * 2]);
        slots[index] = { at: now + wait, ticket: Number(pairs[position * 2 + 1]), limit, epoch, queued: wait > SLOT_SLACK_MS };
      });
    });
    return slots;
  }

  /**
   * Asks whether the call may go now (and counts it if so). If not, it waits in line for its
   * predecessors to the same URL (`inLine`), or for room in the webhook's window. The calls
   * asked for in one tick travel together: one script per webhook, one round trip.
   */
  acquirePermit(webhookId: string, url: string, limit: number, slot: Slot, callId: string): Promise<Permit> {
    const mayOvertake = !slot.queued || Date.now() > slot.at + Throttle.LINE_GRACE_MS;
    return new Promise((resolve, reject) => {
      const groupKey = `${webhookId}\u0000${limit}\u0000${slot.epoch}`;
      let group = this.asked.get(groupKey);
      if (!group) this.asked.set(groupKey, (group = { webhookId, limit, epoch: slot.epoch, calls: [] }));
      group.calls.push({ url, ticket: slot.ticket, mayOvertake, queued: slot.queued, callId, resolve, reject });
      if (!this.askScheduled) {
        this.askScheduled = true;
        setImmediate(() => void this.askForPermits());
      }
    });
  }

  private async askForPermits(): Promise<void> {
    this.askScheduled = false;
    const groups = [...this.asked.values()];
    this.asked.clear();
    const pipeline = this.redis.pipeline() as unknown as {
      gwAcquirePermits(numberOfKeys: number, ...keysAndArgs: (string | number)[]): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const { webhookId, limit, epoch, calls } of groups) {
      // A line's calls in ticket order, so that one asked for with its predecessor goes right after it.
      calls.sort((a, b) => (a.url === b.url ? a.ticket - b.ticket : a.url < b.url ? -1 : 1));
      const lines = [...new Set(calls.map((call) => call.url))];
      const lineIndex = new Map(lines.map((url, index) => [url, index + 1]));
      const perCall = calls.flatMap((call) => [lineIndex.get(call.url)!, call.ticket, call.mayOvertake ? 1 : 0, call.callId]);
      pipeline.gwAcquirePermits(
        2 + lines.length,
        this.logKey(webhookId),
        this.epochKey(webhookId),
        ...lines.map((url) => this.lineKey(webhookId, epoch, url)),
        limit,
        Throttle.LOG_WINDOW_MS,
        LINE_TTL_MS,
        epoch,
        this.lineGap(limit),
        Throttle.LEFT_WAIT_MS,
        ...perCall,
      );
    }
    try {
      const results = (await pipeline.exec()) ?? [];
      groups.forEach(({ limit, calls }, index) => {
        const [error, reply] = results[index] ?? [new Error('no reply')];
        calls.forEach((call, position) => {
          if (error) return call.reject(error);
          const wait = Number((reply as number[])[position]);
          // A queued call says when it left too: the first of a burst has no window over half full yet.
          if (wait === 0 || wait === -3) call.resolve({ granted: true, saysWhenLeft: wait === -3 || call.queued });
          else if (wait === -2) call.resolve({ granted: false, waitMs: 0, inLine: false, superseded: true });
          // In line: ask again soon, the predecessor is due within a slot.
          else if (wait < 0) {
            call.resolve({ granted: false, waitMs: Math.max(5, Math.min(50, this.slotInterval(limit) / 2000)), inLine: true, superseded: false });
          } else call.resolve({ granted: false, waitMs: wait, inLine: false, superseded: false });
        });
      });
    } catch (error) {
      for (const { calls } of groups) for (const call of calls) call.reject(error);
    }
  }

  /**
   * Says that a call whose permit `saysWhenLeft` has left (its request is being written to its
   * connection): the window counts it from now, and the next in its line may go half a slot from
   * now. Without it, the next waits `LEFT_WAIT_MS` from this call's permit. `callId` is the one
   * the permit was asked with.
   */
  async callLeft(webhookId: string, url: string, slot: Slot, callId: string): Promise<void> {
    const command = this.redis as unknown as {
      gwCallLeft(lineKey: string, logKey: string, ticket: number, lineTtlMs: number, callId: string, windowMs: number): Promise<number>;
    };
    await command.gwCallLeft(this.lineKey(webhookId, slot.epoch, url), this.logKey(webhookId), slot.ticket, LINE_TTL_MS, callId, Throttle.LOG_WINDOW_MS);
  }

  /** Gives up the slot's place in line: the calls after it need not wait for it. */
  async leaveLine(webhookId: string, url: string, slot: Slot): Promise<void> {
    const command = this.redis as unknown as { gwLeaveLine(lineKey: string, ticket: number, lineTtlMs: number): Promise<number> };
    await command.gwLeaveLine(this.lineKey(webhookId, slot.epoch, url), slot.ticket, LINE_TTL_MS);
  }

  /** Gives up the slot's place in line and books a new slot under the current limit and epoch. */
  async rebookSlot(request: SlotRequest, previous: Slot): Promise<Slot> {
    const [, slot] = await Promise.all([this.leaveLine(request.webhookId, request.url, previous), this.reserveSlot(request)]);
    return slot;
  }

  /** The webhook's newest throttle epoch Redis knows of (0 if none). */
  async epochOf(webhookId: string): Promise<number> {
    return Number((await this.redis.get(this.epochKey(webhookId))) ?? 0);
  }

  // Each throttle epoch has its own clock and lines (epoch 0 keeps the keys from before epochs).
  private epochKey = (webhookId: string) => `${this.prefix}:epoch:${webhookId}`;
  /** The webhook's calls of the last window, whatever the epoch. */
  private logKey = (webhookId: string) => `${this.prefix}:calls:${webhookId}`;
  private slotKey = (webhookId: string, epoch: number) => `${this.prefix}:slot:${webhookId}${epoch ? `:e${epoch}` : ''}`;
  private lineKey = (webhookId: string, epoch: number, url: string) => `${this.prefix}:line:${webhookId}:${epoch ? `e${epoch}:` : ''}${url}`;
  /** Microseconds between slots. */
  private slotInterval = (limit: number) => Math.ceil((Throttle.WINDOW_MS * 1000 * (1 + Throttle.MARGIN)) / limit);
  /** The least time (ms) between two calls in a URL's line: half a slot, so that the limit, not the gap, sets the pace. */
  private lineGap = (limit: number) => Math.floor(this.slotInterval(limit) / 2000);
}
