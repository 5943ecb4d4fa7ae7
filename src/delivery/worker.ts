import { randomUUID } from 'node:crypto';
import { DelayedError, Worker, type Job } from 'bullmq';
import { sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import type { Config } from '../config';
import { queryRows, type Db } from '../db/database';
import type { Logger } from '../logger';
import type { Metrics } from '../server/metrics';
import { USER_AGENT } from '../version';
import { DeliveryLoader, MAX_BODY_BYTES, type DeliveryWork } from './loader';
import { DELIVERY_QUEUE, deliveryJobData, type DeliveryJobData } from './queue';
import { AttemptRecorder, type AttemptOutcome } from './recorder';
import { decideRetry, parseRetryAfter } from './retry';
import { Sender, type SendResult } from './sender';
import { catchUpThrottleEpoch } from './service';
import { signMessage } from './signature';
import { statusEvent, type StatusPublisher } from './status';
import { FINAL_STATUSES, type DeliveryStatus } from './tables';
import { SLOT_SLACK_MS, Throttle, type Slot, type SlotRequest } from './throttle';
import { UrlSlots } from './urlSlots';

export const WORKER_CONCURRENCY = 200;
/**
 * BullMQ workers the process runs, each with a share of the concurrency. A BullMQ worker takes
 * jobs one round trip at a time, so a batch of new jobs reaches its last slot late; several take
 * a batch up together (at 1,000 rows/s on a slow machine: commit-to-receipt p50 105 -> 85 ms).
 */
const FETCH_LOOPS = 4;
/** At most this many calls to one URL at once per worker process: a hanging receiver cannot take every slot. */
export const PER_URL_CONCURRENCY = 50;
/**
 * A URL none of whose calls finished for this long is taken for hanging: calls waiting for it go
 * back to the queue. A call to a URL that is only slow waits in the process for a place if its
 * turn is expected within `maxWaitMs`, else it goes back too: a slow receiver's backlog cannot
 * fill the worker's slots and hold back other webhooks. Hanging URLs together hold at most
 * three quarters of the slots (three URLs' worth); the rest are kept for URLs that answer.
 */
const URL_SLOT_LIMITS = { perUrl: PER_URL_CONCURRENCY, stallMs: 500, maxWaitMs: 1000, quietMax: WORKER_CONCURRENCY - PER_URL_CONCURRENCY };
/** Calls sent back from a busy URL try again after as long as it has hung, or as their turn is expected, within these bounds. */
const URL_BUSY_RETRY_MS = { min: 250, max: 5000 };
/**
 * Bytes of bodies larger than INLINE_BODY_BYTES the process holds at once (a call holds its body
 * about three times over: the text, its UTF-8 copy on the wire, the signed content). A call
 * whose body does not fit goes back to the queue to try again, holding no worker slot; one
 * always goes when no other large body is held.
 */
const LARGE_BODIES_MAX_BYTES = 32 * 1024 * 1024;
const LARGE_BODY_RETRY_MS = 250;
/** The longest wait for the throttle's window spent in a worker slot; a longer one is spent in the delayed set. */
const IN_PROCESS_WAIT_MAX_MS = 250;
/**
 * A call that waited in the process longer than this since its delivery was loaded (for a place
 * to its URL, for the throttle's window) checks it again before it goes: it is not made if the
 * webhook was deleted, the URL taken off or the message redelivered meanwhile.
 */
const RECHECK_AFTER_WAIT_MS = 100;
/** How long a stop waits for the calls in hand, beyond the delivery timeout that bounds each. */
const STOP_MARGIN_MS = 5_000;
/** How long a stop waits for the jobs whose attempts it gave up to end (the recorder tries again every second). */
const GIVE_UP_WAIT_MS = 2_000;

export interface DeliveryWorkerOptions {
  db: Db;
  config: Config;
  log: Logger;
  redisPrefix: string;
  status: StatusPublisher;
  metrics: Metrics;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether the delivery is still there (not deleted with its webhook), in this generation, and not done. */
async function stillDue(db: Db, deliveryId: number, generation: number): Promise<boolean> {
  const [row] = await queryRows<{ generation: number; status: DeliveryStatus }>(
    db,
    sql`select generation, status from webhook_gateway.deliveries where id = ${deliveryId}`,
    { prepared: true },
  );
  return row !== undefined && row.generation === generation && !FINAL_STATUSES.includes(row.status);
}

/** Whether `promise` settles within `ms`. */
const settlesWithin = (promise: Promise<unknown>, ms: number): Promise<boolean> =>
  Promise.race([promise.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref())]);

/**
 * Runs delivery jobs: load → throttle → send → record, then done, retried later, or dead.
 * Every stage but sending is shared work batched or done once per process.
 */
export class DeliveryWorker {
  private readonly workers: Worker<DeliveryJobData>[];
  private readonly loader: DeliveryLoader;
  private readonly recorder: AttemptRecorder;
  private readonly sender: Sender;
  private readonly throttle: Throttle;
  private readonly redis: Redis;
  private readonly throttleRedis: Redis;
  private readonly urlSlots = new UrlSlots(URL_SLOT_LIMITS);
  /** Bytes of large bodies held by calls under way (LARGE_BODIES_MAX_BYTES). */
  private largeBodyBytes = 0;
  /** The jobs being run, so that a stop can wait for their attempts to be recorded. */
  private readonly running = new Set<Promise<void>>();
  /** Throttle epochs being moved past Redis', by webhook. */
  private readonly catchingUp = new Map<string, Promise<void>>();

  constructor(private readonly options: DeliveryWorkerOptions) {
    const { config, db, log } = options;
    // Jobs finish in bunches (a batch of attempt records commits at once): auto-pipelining sends
    // their BullMQ scripts in one write, and the next jobs then arrive together, in fuller batches.
    // Not the wait for new jobs (alone on its connection, BullMQ's copy of this one): a pipeline made
    // on a connection that carries BullMQ's scripts costs about 40 µs, and these are hundreds a second.
    this.redis = new Redis(config.redisUrl, {
      maxRetriesPerRequest: null,
      enableAutoPipelining: true,
      autoPipeliningIgnoredCommands: ['bzpopmin'],
    });
    this.redis.on('error', () => {}); // reported by the gateway's own Redis connection
    this.loader = new DeliveryLoader(db);
    this.recorder = new AttemptRecorder(db, log);
    this.sender = new Sender({
      timeoutMs: config.deliveryTimeoutMs,
      allowPrivateTargets: config.allowPrivateTargets,
      userAgent: USER_AGENT,
    });
    // Permits are asked by many jobs at once: auto-pipelining sends those of one tick in one write.
    this.throttleRedis = new Redis(config.redisUrl, { maxRetriesPerRequest: null, enableAutoPipelining: true });
    this.throttleRedis.on('error', () => {});
    this.throttle = new Throttle(this.throttleRedis, options.redisPrefix);
    const lockDuration = Math.max(10_000, config.deliveryTimeoutMs + 5_000);
    let reported = false; // Redis outages are reported by the gateway's own connection; once here is enough
    this.workers = Array.from({ length: FETCH_LOOPS }, () => {
      const worker = new Worker<DeliveryJobData>(DELIVERY_QUEUE, (job, token) => this.run(job, token), {
        connection: this.redis,
        prefix: options.redisPrefix,
        concurrency: WORKER_CONCURRENCY / FETCH_LOOPS,
        // A job whose worker died is taken up again after its lock runs out.
        lockDuration,
        stalledInterval: lockDuration / 2,
        maxStalledCount: 1000,
        autorun: false,
      });
      worker.on('error', (error) => {
        if (!reported) log.warn({ err: error.message }, 'delivery worker: queue unreachable');
        reported = true;
      });
      worker.on('ready', () => (reported = false));
      worker.on('failed', (job, error) => log.error({ err: error, jobId: job?.id }, 'delivery job failed'));
      return worker;
    });
  }

  start(): void {
    for (const worker of this.workers) void worker.run();
  }

  /**
   * Finishes the jobs in hand (their attempts recorded), takes no new ones, closes connections.
   * Each call ends within the delivery timeout, so that (plus a margin) is how long it waits;
   * what is still waiting then is attempts held for Postgres (away), which are given up: their
   * jobs fail, and run again later (the calls are made again).
   */
  async stop(): Promise<void> {
    // With Redis away a graceful close waits for it forever; there is nothing to hand back then.
    const closing = Promise.all(this.workers.map((worker) => worker.close(this.redis.status !== 'ready')));
    const finished = Promise.allSettled([closing, ...this.running]);
    if (!(await settlesWithin(finished, this.options.config.deliveryTimeoutMs + STOP_MARGIN_MS))) {
      this.recorder.giveUp();
      await settlesWithin(finished, GIVE_UP_WAIT_MS);
    }
    // A write that hangs (Postgres unreachable without refusing, or a lock) must not hold the stop.
    await settlesWithin(this.recorder.flush(), GIVE_UP_WAIT_MS);
    await this.sender.close();
    this.redis.disconnect();
    this.throttleRedis.disconnect();
  }

  private run(job: Job<DeliveryJobData>, token: string | undefined): Promise<void> {
    const running = this.process(job, token);
    const forget = () => this.running.delete(running);
    this.running.add(running);
    running.then(forget, forget);
    return running;
  }

  private async process(job: Job<DeliveryJobData>, token: string | undefined): Promise<void> {
    const data = deliveryJobData.parse(job.data);
    const work = await this.loader.load(data.deliveryId);
    const loadedAt = Date.now();
    if (!work) return; // gone with its webhook: nothing to send
    if (work.generation !== data.generation || FINAL_STATUSES.includes(work.status)) {
      // Superseded by a redelivery, or already done: nothing to send, and its place in line is given up.
      if (data.slot) await this.throttle.leaveLine(work.webhookId, work.url, data.slot);
      return;
    }
    if (work.bodyBytes > MAX_BODY_BYTES) {
      // Too large to send: it fails for good at once, no call made.
      if (data.slot) await this.throttle.leaveLine(work.webhookId, work.url, data.slot);
      const error = `the body is larger than ${MAX_BODY_BYTES} bytes; not sent`;
      return this.conclude(job, token, data, work, { attemptedAt: new Date(), result: { ok: false, permanent: true, durationMs: 0, error } });
    }
    // A retry's job woke early (it ran again after a crash, or Redis lost its delay): it waits for its time.
    const early = work.status === 'RETRY_SCHEDULED' ? work.nextAttemptAt.getTime() - Date.now() : 0;
    if (early > SLOT_SLACK_MS) return this.delay(job, token, { deliveryId: data.deliveryId, generation: data.generation }, early);
    let slot = data.slot;
    if (!slot) {
      slot = await this.throttle.reserveSlot(this.slotRequest(work));
      const wait = slot.at - Date.now();
      if (wait > SLOT_SLACK_MS) return this.delay(job, token, { ...data, slot }, wait);
    }
    const sent =
      work.body === null
        ? await this.sendLarge(job, token, { ...data, slot }, work, loadedAt)
        : await this.sendInTurn(job, token, { ...data, slot }, work, work.body, loadedAt);
    if (!sent) return; // superseded or gone while it waited: another job makes the call, or none is to be made
    return this.conclude(job, token, data, work, sent);
  }

  /** Sends a body too large to have come with its delivery: read now, within the budget for large bodies. */
  private async sendLarge(
    job: Job<DeliveryJobData>,
    token: string | undefined,
    data: DeliveryJobData & { slot: Slot },
    work: DeliveryWork,
    loadedAt: number,
  ): Promise<{ attemptedAt: Date; result: SendResult } | undefined> {
    if (this.largeBodyBytes > 0 && this.largeBodyBytes + work.bodyBytes > LARGE_BODIES_MAX_BYTES) {
      return this.sendBack(job, token, data, work, LARGE_BODY_RETRY_MS);
    }
    this.largeBodyBytes += work.bodyBytes;
    try {
      const body = await this.loader.loadBody(work.messageId);
      // Gone with its webhook since its delivery was loaded: no call.
      return body === undefined ? undefined : await this.sendInTurn(job, token, data, work, body, loadedAt);
    } finally {
      this.largeBodyBytes -= work.bodyBytes;
    }
  }

  /** Records the attempt, tells subscribers, and puts the job back to wait for its retry if there is one. */
  private async conclude(
    job: Job<DeliveryJobData>,
    token: string | undefined,
    data: DeliveryJobData,
    work: DeliveryWork,
    { attemptedAt, result }: { attemptedAt: Date; result: SendResult },
  ): Promise<void> {
    const { status, metrics } = this.options;
    const outcome = this.judge(work, attemptedAt, result);
    const applied = await this.recorder.record(outcome);
    // Not applied: a redelivery or the webhook's deletion came in between, and said so itself.
    if (applied) {
      const { httpStatus, durationMs, error } = outcome.result;
      status.publish([statusEvent(work, outcome.status, outcome.attempt, { httpStatus, durationMs, error, nextAttemptAt: outcome.nextAttemptAt })]);
    }
    metrics.deliveries.inc({ outcome: outcome.status.toLowerCase() });
    metrics.attemptDuration.observe(result.durationMs / 1000);
    if (outcome.status === 'SUCCEEDED') metrics.deliveryLatency.observe((Date.now() - work.messageCreatedAt.getTime()) / 1000);
    if (outcome.status === 'RETRY_SCHEDULED') {
      const delayMs = outcome.nextAttemptAt!.getTime() - Date.now();
      return this.delay(job, token, { deliveryId: data.deliveryId, generation: data.generation }, delayMs);
    }
  }

  /** Waits for a place to the URL and the throttle's permit, then makes the call (none if the delivery was booked afresh meanwhile). */
  private async sendInTurn(
    job: Job<DeliveryJobData>,
    token: string | undefined,
    data: DeliveryJobData & { slot: Slot },
    work: DeliveryWork,
    body: string,
    loadedAt: number,
  ): Promise<{ attemptedAt: Date; result: SendResult } | undefined> {
    const { slot } = data;
    const limit = this.limitOf(work);
    if (!(await this.urlSlots.acquire(work.url))) {
      const { min, max } = URL_BUSY_RETRY_MS;
      return this.sendBack(job, token, data, work, Math.min(max, Math.max(min, this.urlSlots.retryInMs(work.url))));
    }
    const placeTakenAt = Date.now();
    try {
      const callId = randomUUID();
      let saysWhenLeft = false;
      let permittedAt = 0;
      for (;;) {
        const permit = await this.throttle.acquirePermit(work.webhookId, work.url, limit, slot, callId);
        if (permit.granted) {
          saysWhenLeft = permit.saysWhenLeft;
          permittedAt = Date.now();
          break;
        }
        if (permit.superseded) return this.rebookSuperseded(job, token, data, work);
        if (permit.inLine || slot.limit === limit) {
          // A full window (a backlog came due at once, say after the workers were down) waits in
          // the delayed set, so that a throttled webhook's jobs do not fill the worker's slots
          // and hold back other webhooks. In line, or calls bunched up by timing jitter: the wait
          // is short and is waited here. Either way the slot, and the place in line, are kept.
          if (!permit.inLine && permit.waitMs > IN_PROCESS_WAIT_MAX_MS) return this.delay(job, token, data, permit.waitMs);
          await sleep(permit.waitMs);
          continue;
        }
        // The limit is not the one the slot was spaced for (CALL_THROTTLING_MAX was lowered; a
        // change of CallThrottling rebooks the waiting deliveries itself).
        return this.bookAgain(job, token, data, work, permit.waitMs);
      }
      // Said once the call has left, or once no call goes: the next call in the URL's line may
      // follow, and the window counts the call from then. (If saying so fails, the next waits a
      // second for it, and the window counts it from its permit.) A call that leaves late says so
      // too, whatever its permit asked.
      const sayLeft = () => void this.throttle.callLeft(work.webhookId, work.url, slot, callId).catch(() => {});
      const onLeft = saysWhenLeft ? sayLeft : () => (Date.now() - permittedAt > Throttle.LEFT_LATE_MS ? sayLeft() : undefined);
      if (Date.now() - loadedAt > RECHECK_AFTER_WAIT_MS) {
        let due = false;
        try {
          due = await stillDue(this.options.db, work.deliveryId, data.generation);
        } finally {
          if (!due && saysWhenLeft) sayLeft(); // gone, or the check failed
        }
        if (!due) return undefined;
      }
      this.options.status.publish([statusEvent(work, 'SENDING', work.attempts + 1)]);
      const attemptedAt = new Date();
      const timestamp = Math.floor(attemptedAt.getTime() / 1000);
      // It has left once the request is being written to its connection (a new one connected first).
      const sending = this.sender.send(
        work.url,
        body,
        {
          'webhook-id': work.messageId,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': signMessage(work.signingKeys, work.messageId, timestamp, body),
        },
        onLeft,
      );
      return { attemptedAt, result: await sending };
    } finally {
      this.urlSlots.release(work.url, Date.now() - placeTakenAt);
    }
  }

  /**
   * The limit changed while the job waited to send: its delivery was booked afresh under a new
   * generation (this job ends without a call), or, should it not have been, it books a slot
   * under the current limit.
   */
  private async rebookSuperseded(
    job: Job<DeliveryJobData>,
    token: string | undefined,
    data: DeliveryJobData & { slot: Slot },
    work: DeliveryWork,
  ): Promise<undefined> {
    const current = await this.loader.load(work.deliveryId);
    if (!current || current.generation !== data.generation || FINAL_STATUSES.includes(current.status)) {
      await this.throttle.leaveLine(work.webhookId, work.url, data.slot);
      return undefined;
    }
    // Refused in the epoch Postgres holds current, read after the refusal: Redis knows a newer one
    // than Postgres (restored from a backup). Booking again in it would be refused for as long as
    // Redis keeps its epoch, so the epoch moves past Redis', rebooking this delivery too.
    if (current.throttleEpoch === data.slot.epoch) {
      const redisEpoch = await this.throttle.epochOf(current.webhookId);
      if (redisEpoch > current.throttleEpoch) {
        await this.catchUpEpoch(current.webhookId, current.throttleEpoch, redisEpoch);
        await this.throttle.leaveLine(work.webhookId, work.url, data.slot);
        return undefined;
      }
    }
    return this.bookAgain(job, token, data, current);
  }

  /** One catch-up per webhook at a time in this process: the webhook's other refused jobs wait for it, not for its row lock. */
  private catchUpEpoch(webhookId: string, seenEpoch: number, redisEpoch: number): Promise<void> {
    let catchingUp = this.catchingUp.get(webhookId);
    if (!catchingUp) {
      catchingUp = catchUpThrottleEpoch(this.options.db, webhookId, seenEpoch, redisEpoch)
        .then((moved) => {
          if (moved) {
            this.options.log.warn(
              { webhookId, epoch: seenEpoch, redisEpoch },
              "throttle epoch behind Redis' (Postgres restored from a backup?): moved past it, the waiting deliveries booked afresh",
            );
          }
        })
        .finally(() => this.catchingUp.delete(webhookId));
      this.catchingUp.set(webhookId, catchingUp);
    }
    return catchingUp;
  }

  /**
   * Gives up the job's slot and place in line, books one under the delivery's current limit and
   * epoch, and waits for it (at least `atLeastMs`) in the delayed set, not in a worker slot.
   */
  private async bookAgain(
    job: Job<DeliveryJobData>,
    token: string | undefined,
    data: DeliveryJobData & { slot: Slot },
    work: DeliveryWork,
    atLeastMs = 0,
  ): Promise<never> {
    const slot = await this.throttle.rebookSlot(this.slotRequest(work), data.slot);
    return this.delay(job, token, { ...data, slot }, Math.max(slot.at - Date.now(), atLeastMs));
  }

  private limitOf(work: DeliveryWork): number {
    return Math.min(work.callThrottling, this.options.config.callThrottlingMax);
  }

  private slotRequest(work: DeliveryWork): SlotRequest {
    return { webhookId: work.webhookId, url: work.url, limit: this.limitOf(work), epoch: work.throttleEpoch };
  }

  private judge(work: DeliveryWork, attemptedAt: Date, result: SendResult): AttemptOutcome {
    const attempt = work.attempts + 1;
    const base = {
      deliveryId: work.deliveryId,
      generation: work.generation,
      messageId: work.messageId,
      webhookId: work.webhookId,
      eventId: work.eventId,
      url: work.url,
      attempt,
      attemptedAt,
      result,
    };
    if (result.ok) return { ...base, status: 'SUCCEEDED', nextAttemptAt: null };
    if (result.permanent) return { ...base, status: 'DEAD', nextAttemptAt: null };
    const decision = decideRetry(
      attempt,
      this.options.config.retryScheduleMs,
      result.httpStatus,
      parseRetryAfter(result.retryAfter),
    );
    if (!decision.retry) {
      return { ...base, status: 'DEAD', nextAttemptAt: null, result: { ...result, error: `${result.error}; ${decision.reason}` } };
    }
    return { ...base, status: 'RETRY_SCHEDULED', nextAttemptAt: new Date(Date.now() + decision.delayMs) };
  }

  /**
   * Puts a call that cannot go yet back in the queue for `ms`, out of its turn: its successors in
   * the URL's line go on without it (waiting for it, they would hold the URL's places while it
   * waits in the queue; it goes when it is back).
   */
  private async sendBack(
    job: Job<DeliveryJobData>,
    token: string | undefined,
    data: DeliveryJobData & { slot: Slot },
    work: DeliveryWork,
    ms: number,
  ): Promise<never> {
    if (data.slot.queued) await this.throttle.leaveLine(work.webhookId, work.url, data.slot);
    return this.delay(job, token, data, ms);
  }

  /** Puts the job back in the delayed set until `ms` from now (BullMQ's way to wait without holding a slot). */
  private async delay(job: Job<DeliveryJobData>, token: string | undefined, data: DeliveryJobData, ms: number): Promise<never> {
    await job.updateData(data);
    await job.moveToDelayed(Date.now() + Math.max(0, ms), token);
    throw new DelayedError();
  }
}
