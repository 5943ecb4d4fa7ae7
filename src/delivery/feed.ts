import type { Redis } from 'ioredis';
import { AppError } from '../errors';
import type { Logger } from '../logger';
import type { Metrics } from '../server/metrics';
import type { DeliveryStatusEvent } from './status';

export interface StatusFilter {
  webhookId?: string;
  messageId?: string;
}

/** A subscription's items: status changes, and last, if the gateway cut it off, the reason. */
export type FeedItem = DeliveryStatusEvent | AppError;

/** Status changes one subscriber may have waiting before it is cut off. */
export const MAX_BUFFERED_EVENTS = 10_000;

const fellBehind = () =>
  new AppError(
    'TooManyRequests',
    `This subscriber fell more than ${MAX_BUFFERED_EVENTS} status changes behind: they were dropped and the subscription ended. ` +
      'Subscribe again, and read what was missed with messages and message.',
  );

const unavailable = () =>
  new AppError('InternalError', 'Live delivery status is unavailable right now (Redis cannot be reached); try again shortly');

const matches = (filter: StatusFilter, event: DeliveryStatusEvent) =>
  (filter.webhookId === undefined || filter.webhookId === event.webhookId) &&
  (filter.messageId === undefined || filter.messageId === event.messageId);

/**
 * One subscriber's stream: status changes wait in a bounded buffer until the transport takes
 * them. A subscriber that lets more than MAX_BUFFERED_EVENTS pile up (a slow client) gets an
 * error instead of the backlog, then the end: memory stays bounded whatever it does.
 */
export class StatusSubscription implements AsyncIterableIterator<FeedItem> {
  private buffer: DeliveryStatusEvent[] = [];
  private head = 0;
  /** Why the gateway ends the subscription, still to be given to the subscriber. */
  private ending: AppError | undefined;
  private closed = false;
  private waiter: ((result: IteratorResult<FeedItem>) => void) | undefined;
  private accessCheck: NodeJS.Timeout | undefined;

  constructor(
    readonly filter: StatusFilter,
    private readonly onClose: (subscription: StatusSubscription) => void,
  ) {}

  offer(events: readonly DeliveryStatusEvent[]): void {
    if (this.closed || this.ending) return;
    for (const event of events) {
      if (!matches(this.filter, event)) continue;
      if (this.waiter) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter({ value: event, done: false });
      } else if (this.buffer.length - this.head >= MAX_BUFFERED_EVENTS) {
        this.endWith(fellBehind());
        return;
      } else {
        this.buffer.push(event);
      }
    }
  }

  next(): Promise<IteratorResult<FeedItem>> {
    if (this.head < this.buffer.length) {
      const value = this.buffer[this.head++]!;
      if (this.head === this.buffer.length) {
        this.buffer = [];
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ending && !this.closed) {
      this.close();
      return Promise.resolve({ value: this.ending, done: false });
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiter = resolve));
  }

  return(): Promise<IteratorResult<FeedItem>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /**
   * Runs `check` every `everyMs`, and a second after `expiresAt`: when it throws an AppError
   * (the token revoked or expired), the subscription ends with it. Other failures (the database
   * away) wait for the next check.
   */
  keepCheckingAccess(check: () => Promise<unknown>, everyMs: number, expiresAt: Date | undefined): void {
    const untilExpiry = (expiresAt?.getTime() ?? Infinity) - Date.now();
    this.accessCheck = setTimeout(
      () => {
        check().then(
          () => !this.closed && this.keepCheckingAccess(check, everyMs, expiresAt),
          (error: unknown) => {
            if (error instanceof AppError) this.endWith(error);
            else if (!this.closed) this.keepCheckingAccess(check, everyMs, expiresAt);
          },
        );
      },
      Math.max(1000, Math.min(everyMs, untilExpiry + 1000)),
    );
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Drops what is buffered; the subscriber gets `reason`, then the end. */
  private endWith(reason: AppError): void {
    if (this.closed || this.ending) return;
    this.ending = reason;
    this.buffer = [];
    this.head = 0;
    const waiter = this.waiter;
    if (!waiter) return;
    this.waiter = undefined;
    this.close();
    waiter({ value: reason, done: false });
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.accessCheck);
    this.buffer = [];
    this.waiter?.({ value: undefined, done: true });
    this.waiter = undefined;
    this.onClose(this);
  }
}

/**
 * Status changes from every gateway process (Redis pub/sub), fanned out to this process's
 * subscribers. The channel is listened to only while someone here is subscribed, so a process
 * nobody watches does not read the stream.
 */
export class StatusFeed {
  private readonly subscriptions = new Set<StatusSubscription>();
  private listening: Promise<unknown> | undefined;

  constructor(
    /** A connection of its own: a subscribing connection can do nothing else. */
    private readonly subscriber: Redis,
    private readonly channel: string,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.deliver(message);
    });
    // ioredis subscribes again after a reconnect; if the last subscriber left meanwhile, let go.
    subscriber.on('ready', () => {
      if (!this.listening) this.subscriber.unsubscribe(this.channel).catch(() => {});
    });
  }

  /** Starts a subscription; resolves once changes published from now on will reach it. */
  async open(filter: StatusFilter): Promise<StatusSubscription> {
    if (['reconnecting', 'close', 'end'].includes(this.subscriber.status)) throw unavailable();
    // Commands on one connection run in order, so a SUBSCRIBE sent after an UNSUBSCRIBE wins; if
    // the last subscriber left while this one waited, the channel was let go: listen again.
    for (;;) {
      const listening = (this.listening ??= this.subscriber.subscribe(this.channel));
      try {
        await listening;
      } catch (error) {
        if (this.listening === listening) this.listening = undefined;
        this.log.warn({ err: (error as Error).message }, 'live delivery status: cannot listen on Redis');
        throw unavailable();
      }
      if (this.listening === listening) break;
    }
    const subscription = new StatusSubscription(filter, (closed) => this.remove(closed));
    this.subscriptions.add(subscription);
    this.metrics.subscriptionsOpen.inc();
    return subscription;
  }

  get size(): number {
    return this.subscriptions.size;
  }

  /** Ends every subscription (their clients see them complete). */
  close(): void {
    for (const subscription of [...this.subscriptions]) void subscription.return();
    this.subscriber.disconnect();
  }

  private remove(subscription: StatusSubscription): void {
    if (!this.subscriptions.delete(subscription)) return;
    this.metrics.subscriptionsOpen.dec();
    if (this.subscriptions.size === 0 && this.listening) {
      this.listening = undefined;
      this.subscriber.unsubscribe(this.channel).catch(() => {});
    }
  }

  private deliver(message: string): void {
    let events: DeliveryStatusEvent[];
    try {
      events = JSON.parse(message) as DeliveryStatusEvent[];
    } catch (error) {
      this.log.warn({ err: error }, 'unreadable delivery status message');
      return;
    }
    for (const subscription of this.subscriptions) subscription.offer(events);
  }
}
