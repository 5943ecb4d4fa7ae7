import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The process's Prometheus registry and the metrics its roles record. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    httpRequests: new Counter({
      name: 'gateway_http_requests_total',
      help: 'HTTP requests served, by method, route and status.',
      labelNames: ['method', 'route', 'status'] as const,
      registers,
    }),
    httpDuration: new Histogram({
      name: 'gateway_http_request_duration_seconds',
      help: 'Time to answer an HTTP request.',
      labelNames: ['method', 'route'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    deliveries: new Counter({
      name: 'gateway_deliveries_total',
      help: 'Delivery attempts made by this process, by outcome (succeeded, retry_scheduled, dead).',
      labelNames: ['outcome'] as const,
      registers,
    }),
    attemptDuration: new Histogram({
      name: 'gateway_delivery_attempt_duration_seconds',
      help: 'Time a receiver took to answer a delivery attempt.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15],
      registers,
    }),
    deliveryLatency: new Histogram({
      name: 'gateway_delivery_latency_seconds',
      help: 'Time from a message being created to a receiver acknowledging it (throttling and retries included).',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600],
      registers,
    }),
    subscriptionsOpen: new Gauge({
      name: 'gateway_subscriptions_open',
      help: 'GraphQL subscriptions open on this process.',
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

export interface BacklogSources {
  /** Jobs in the delivery queue by state (waiting, delayed, active, ...). */
  queueJobs(): Promise<Record<string, number>>;
  outboxRows(): Promise<number>;
  deadDeliveries(): Promise<number>;
}

const SOURCE_TIMEOUT_MS = 2000;
const SOURCE_CACHE_MS = 5000;

/**
 * A source read at most every few seconds, however often /metrics (which needs no token) is
 * asked, and never more than once at a time. Its answer is undefined when it fails or is slow.
 */
function cachedSource<T>(read: () => Promise<T>): () => Promise<T | undefined> {
  let last: { at: number; value: Promise<T | undefined> } | undefined;
  return () => {
    if (!last || Date.now() - last.at > SOURCE_CACHE_MS) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), SOURCE_TIMEOUT_MS)));
      last = { at: Date.now(), value: Promise.race([read().catch(() => undefined), timeout]).finally(() => clearTimeout(timer)) };
    }
    return last.value;
  };
}

/**
 * Gauges of the installation's shared state, read when scraped. Every process reports the same
 * values: aggregate them with max, not sum. A source that cannot answer leaves its gauge out.
 */
export function addBacklogGauges(metrics: Metrics, sources: BacklogSources): void {
  const registers = [metrics.registry];
  const queueJobs = cachedSource(sources.queueJobs);
  new Gauge({
    name: 'gateway_delivery_queue_jobs',
    help: 'Jobs in the delivery queue, by state (installation-wide).',
    labelNames: ['state'] as const,
    registers,
    async collect() {
      this.reset();
      const counts = (await queueJobs()) ?? {};
      for (const [state, count] of Object.entries(counts)) this.set({ state }, count);
    },
  });
  const single = (name: string, help: string, source: () => Promise<number>) => {
    const read = cachedSource(source);
    return new Gauge({
      name,
      help,
      registers,
      async collect() {
        this.reset();
        const value = await read();
        if (value !== undefined) this.set(value);
      },
    });
  };
  single('gateway_outbox_rows', 'Captured table changes not yet turned into messages (installation-wide).', sources.outboxRows);
  single('gateway_deliveries_dead', 'Deliveries that gave up (Dead) and are still in the log (installation-wide).', sources.deadDeliveries);
}
