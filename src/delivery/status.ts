import type { Redis } from 'ioredis';
import { formatApiDate } from '../dates';
import type { Logger } from '../logger';
import type { DeliveryStatus } from './tables';

/** One status change of one delivery (a message to one URL), as subscribers see it. */
export interface DeliveryStatusEvent {
  messageId: string;
  webhookId: string;
  eventId: string;
  url: string;
  /** The attempt this status is about: the one waiting (QUEUED), under way (SENDING) or just made. */
  attempt: number;
  status: DeliveryStatus;
  httpStatus: number | null;
  durationMs: number | null;
  error: string | null;
  /** When the next attempt is due (RETRY_SCHEDULED), in the API's date format (formatted once, not per subscriber). */
  nextAttemptAt: string | null;
  /** When the change happened, in the API's date format. */
  at: string;
}

/** The Redis channel every gateway process of an installation publishes status changes on. */
export const statusChannel = (redisPrefix: string) => `${redisPrefix}:delivery-status`;

/** Changes waiting for Redis beyond this many are dropped: live status must not grow memory while Redis is away. */
const MAX_PENDING = 10_000;

/**
 * Publishes delivery status changes for live subscribers in any process. Changes made in one
 * tick travel as one message (a JSON array), so a batch of deliveries costs one PUBLISH.
 * Best effort: the record of truth is in Postgres; while Redis is away changes are dropped.
 */
export class StatusPublisher {
  private pending: DeliveryStatusEvent[] = [];
  private scheduled = false;
  private warned = false;

  constructor(
    private readonly redis: Redis,
    private readonly channel: string,
    private readonly log: Logger,
  ) {}

  /** Queues the changes for the next tick's message. */
  publish(events: readonly DeliveryStatusEvent[]): void {
    if (events.length === 0 || this.pending.length >= MAX_PENDING) return;
    this.pending.push(...events);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
  }

  /** Sends the changes now and resolves once Redis has them (or gave up), for changes that must precede others. */
  async publishNow(events: readonly DeliveryStatusEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.send(events);
  }

  async flush(): Promise<void> {
    this.scheduled = false;
    const events = this.pending;
    this.pending = [];
    if (events.length > 0) await this.send(events);
  }

  private async send(events: readonly DeliveryStatusEvent[]): Promise<void> {
    try {
      await this.redis.publish(this.channel, JSON.stringify(events));
      this.warned = false;
    } catch (error) {
      if (!this.warned) this.log.warn({ err: (error as Error).message }, 'live delivery status not published (Redis away)');
      this.warned = true;
    }
  }
}

let formattedMs = 0;
let formatted = '';
/** Now in the API's format; changes come by the thousand per second, so it is formatted once per millisecond. */
function formattedNow(): string {
  const ms = Date.now();
  if (ms !== formattedMs) {
    formattedMs = ms;
    formatted = formatApiDate(new Date(ms));
  }
  return formatted;
}

/** The fields a status change shares with the delivery it is about. */
export interface DeliveryIdentity {
  messageId: string;
  webhookId: string;
  eventId: string;
  url: string;
}

export function statusEvent(
  delivery: DeliveryIdentity,
  status: DeliveryStatus,
  attempt: number,
  details: Partial<Pick<DeliveryStatusEvent, 'httpStatus' | 'durationMs' | 'error'>> & { nextAttemptAt?: Date | null } = {},
): DeliveryStatusEvent {
  return {
    messageId: delivery.messageId,
    webhookId: delivery.webhookId,
    eventId: delivery.eventId,
    url: delivery.url,
    attempt,
    status,
    httpStatus: details.httpStatus ?? null,
    durationMs: details.durationMs ?? null,
    error: details.error ?? null,
    nextAttemptAt: details.nextAttemptAt ? formatApiDate(details.nextAttemptAt) : null,
    at: formattedNow(),
  };
}
