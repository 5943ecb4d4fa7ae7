import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import { eq, sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { ensureBootstrapClient, type BootstrapOutcome } from './auth/clients';
import { ApiRateLimiter } from './auth/rateLimit';
import { Dispatcher } from './capture/dispatcher';
import { outbox } from './capture/tables';
import { StatusFeed } from './delivery/feed';
import { createDeliveryQueue } from './delivery/queue';
import { StatusPublisher, statusChannel } from './delivery/status';
import { deliveries } from './delivery/tables';
import { Throttle } from './delivery/throttle';
import { DeliveryWorker } from './delivery/worker';
import type { Config } from './config';
import { openDatabase, type Database } from './db/database';
import { installationId } from './db/installation';
import type { Logger } from './logger';
import { createGraphQLHandler } from './graphql/handler';
import { attachGraphQLWebSocket } from './graphql/websocket';
import { createApp, MAX_REQUEST_BYTES } from './server/app';
import { addBacklogGauges, createMetrics } from './server/metrics';

export interface Gateway {
  /** Where the HTTP server listens, e.g. `http://127.0.0.1:4000`. */
  url: string;
  database: Database;
  redis: Redis;
  bootstrap: BootstrapOutcome;
  /** Stops taking requests, lets those in flight finish, then closes connections. */
  stop(): Promise<void>;
}

/** A connection for the live status feed: fails fast while Redis is away, so a subscription is refused rather than left hanging. */
function connectSubscriber(url: string): Redis {
  const subscriber = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  subscriber.on('error', () => {}); // reported by the gateway's own connection
  return subscriber;
}

export function connectRedis(url: string, log: Logger): Redis {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
  let reported = false;
  redis.on('error', (error) => {
    if (!reported) log.warn({ err: error.message }, 'redis unreachable; retrying');
    reported = true;
  });
  redis.on('ready', () => {
    if (reported) log.info('redis reachable again');
    reported = false;
  });
  return redis;
}

function listen(server: Server, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** How long a start waits for its Redis connection (a Redis still loading its data answers later). */
const REDIS_CONNECT_WAIT_MS = 3000;

/** How long a stop lets HTTP requests in flight finish before it closes their connections. */
const REQUEST_GRACE_MS = 10_000;

/** Takes no new connections, closes the idle ones, and the rest once their requests end (or the grace runs out). */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    // A client that stalls mid-request must not hold the stop until the process' hard deadline.
    const cutOff = setTimeout(() => server.closeAllConnections(), REQUEST_GRACE_MS);
    server.close(() => {
      clearTimeout(cutOff);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** Starts the roles named in the configuration in this process, on one HTTP port. */
export async function startGateway(config: Config, log: Logger): Promise<Gateway> {
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    embeddedDbDir: config.embeddedDbDir,
    embeddedDbPort: config.embeddedDbPort,
    log,
  });
  const { db } = database;
  const redis = connectRedis(config.redisUrl, log);
  // Settles once the connection is ready or its first attempt failed; a failure is reported by the
  // error listener, and /ready shows it.
  const redisConnected = redis.connect().catch(() => {});
  let backlogQueue: ReturnType<typeof createDeliveryQueue> | undefined;
  try {
    const bootstrap = await database.runExclusive(() => ensureBootstrapClient(db, config.bootstrapClient));
    // Gateways on one database share their Redis keys; gateways on different ones never do.
    const redisPrefix = config.redisPrefix ?? `webhook-gateway:${await installationId(db)}`;
    const metrics = createMetrics();
    const status = new StatusPublisher(redis, statusChannel(redisPrefix), log);
    // Not on the shared connection: BullMQ defines its 64 scripts on the connection it is given,
    // and ioredis copies them all into every pipeline made on that connection (about 40 µs each),
    // such as the dispatcher's slot bookings.
    backlogQueue = createDeliveryQueue(config.redisUrl, redisPrefix);
    const jobCounter = backlogQueue.queue;
    addBacklogGauges(metrics, {
      queueJobs: () => jobCounter.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'failed'),
      outboxRows: () => db.$count(outbox),
      deadDeliveries: () => db.$count(deliveries, eq(deliveries.status, 'DEAD')),
    });

    const api = config.roles.includes('api');
    const statusFeed = api ? new StatusFeed(connectSubscriber(config.redisUrl), statusChannel(redisPrefix), metrics, log) : undefined;
    const rateLimiter = new ApiRateLimiter(redis, redisPrefix, config.apiRateLimit);
    const graphql = statusFeed && createGraphQLHandler({ db, config, log, status, statusFeed, rateLimiter });
    const app = createApp({
      db,
      config,
      log,
      metrics,
      status,
      rateLimiter,
      graphql,
      readiness: { postgres: () => db.execute(sql`select 1`), redis: () => redis.ping() },
    });

    const deliveryQueue = config.roles.includes('dispatcher') ? createDeliveryQueue(config.redisUrl, redisPrefix) : undefined;
    const handover = deliveryQueue && {
      queue: deliveryQueue.queue,
      throttle: new Throttle(redis, redisPrefix),
      callThrottlingMax: config.callThrottlingMax,
      status,
    };
    const dispatcher = handover ? new Dispatcher({ database, config, log, handover, redis, redisPrefix }) : undefined;
    // The dispatcher's first turn uses this connection at once, and it fails fast while Redis is
    // away: started before it connected, a normal start would report the queue unreachable.
    await Promise.race([redisConnected, new Promise((resolve) => setTimeout(resolve, REDIS_CONNECT_WAIT_MS).unref())]);
    await dispatcher?.start();
    const worker = config.roles.includes('worker') ? new DeliveryWorker({ db, config, log, redisPrefix, status, metrics }) : undefined;
    worker?.start();
    const server = createAdaptorServer({ fetch: app.fetch }) as Server;
    const websocket =
      graphql &&
      attachGraphQLWebSocket(server, graphql, {
        db,
        log,
        maxPayload: MAX_REQUEST_BYTES,
        rateLimiter,
        maxConnectionsPerClient: config.wsMaxConnectionsPerClient,
        recheckMs: config.tokenRecheckMs,
      });
    const address = await listen(server, config.port);
    const url = `http://127.0.0.1:${address.port}`;
    log.info({ url, roles: config.roles, database: database.kind }, 'gateway listening');
    return {
      url,
      database,
      redis,
      bootstrap,
      async stop() {
        // An outside client's open transaction holds the embedded database's one session, and the
        // gateway's own queries with it: it is rolled back first, as a Postgres shutdown would.
        await database.stopServing?.();
        await websocket?.close();
        statusFeed?.close();
        // At once: each waits for its own (requests, a batch, calls), and the worker's wait is bounded
        // to fit the process' deadline only if it starts now.
        await Promise.all([closeServer(server), dispatcher?.stop(), worker?.stop()]);
        await deliveryQueue?.close();
        await status.flush();
        await backlogQueue?.close();
        redis.disconnect();
        await database.close();
      },
    };
  } catch (error) {
    await backlogQueue?.close();
    redis.disconnect();
    await database.close();
    throw error;
  }
}
