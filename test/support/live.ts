import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { waitFor } from './wait';

export interface StatusChange {
  messageId: string;
  webhookId: string;
  eventId: string;
  url: string;
  attempt: number;
  status: string;
  httpStatus: number | null;
  durationMs: number | null;
  error: string | null;
  nextAttemptAt: string | null;
  at: string;
}

export const DELIVERY_STATUS_SUBSCRIPTION = `subscription Watch($webhookId: ID, $messageId: ID) {
  deliveryStatus(webhookId: $webhookId, messageId: $messageId) {
    messageId webhookId eventId url attempt status httpStatus durationMs error nextAttemptAt at
  }
}`;

/** A graphql-ws client (the `graphql-ws` package) subscribed to deliveryStatus, recording what it gets. */
export class StatusWatcher {
  readonly changes: StatusChange[] = [];
  readonly errors: unknown[] = [];
  /** How the socket closed, once it has. */
  closed: { code: number; reason: string } | undefined;
  completed = false;
  private readonly client: Client;

  constructor(gatewayUrl: string, connectionParams: Record<string, unknown> | undefined, variables: { webhookId?: string; messageId?: string } = {}) {
    this.client = createClient({
      url: `${gatewayUrl.replace(/^http/, 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams,
      retryAttempts: 0,
      lazy: true,
      on: {
        closed: (event) => {
          const { code, reason } = event as { code: number; reason: string };
          this.closed ??= { code, reason };
        },
      },
    });
    this.client.subscribe<{ deliveryStatus: StatusChange }>(
      { query: DELIVERY_STATUS_SUBSCRIPTION, variables },
      {
        next: (result) => {
          if (result.errors) this.errors.push(...result.errors);
          if (result.data?.deliveryStatus) this.changes.push(result.data.deliveryStatus);
        },
        error: (error) => this.errors.push(error),
        complete: () => (this.completed = true),
      },
    );
  }

  /** Waits until `count` changes (that `pick` selects) have arrived, and returns them. */
  async waitForChanges(count: number, pick: (change: StatusChange) => boolean = () => true, timeoutMs = 20_000): Promise<StatusChange[]> {
    return waitFor(
      async () => {
        const picked = this.changes.filter(pick);
        return picked.length >= count ? picked : undefined;
      },
      timeoutMs,
      `${count} status changes (have ${this.changes.filter(pick).length}: ${JSON.stringify(this.changes.map((c) => c.status))})`,
    );
  }

  async dispose(): Promise<void> {
    await this.client.dispose();
  }
}

/** A graphql-ws connection made at once and kept (not lazy, never retried), and how it was closed, once it is. */
export function openConnection(
  gatewayUrl: string,
  connectionParams: Record<string, unknown>,
): { client: Client; closed(): { code: number; reason: string } | undefined } {
  let closed: { code: number; reason: string } | undefined;
  const client = createClient({
    url: `${gatewayUrl.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: false,
    onNonLazyError: () => {}, // callers look at how it closed
    on: { closed: (event) => (closed ??= { code: (event as CloseEvent).code, reason: (event as CloseEvent).reason }) },
  });
  return { client, closed: () => closed };
}

/** Subscriptions open on a gateway, read from its /metrics. */
export async function openSubscriptions(gatewayUrl: string): Promise<number> {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  const line = text.split('\n').find((entry) => entry.startsWith('gateway_subscriptions_open '));
  return Number(line?.split(' ')[1] ?? 0);
}

/** Waits until the gateway has `count` subscriptions listening: changes made afterwards reach them. */
export async function waitForSubscriptions(gatewayUrl: string, count: number): Promise<void> {
  await waitFor(async () => ((await openSubscriptions(gatewayUrl)) >= count ? true : undefined), 10_000, `${count} open subscriptions`);
}
