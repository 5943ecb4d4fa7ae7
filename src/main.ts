import { ConfigError, loadConfig } from './config';
import { startGateway } from './gateway';
import { createLogger } from './logger';

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(error.message);
  process.exit(1);
}

const log = createLogger(config.logLevel);
// postgres.js can reject a connection attempt that no query awaits while Postgres restarts; it
// reconnects by itself, so such a rejection is logged instead of ending the process.
process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled rejection'));
const gateway = await startGateway(config, log).catch((error: unknown) => {
  log.fatal({ err: error }, 'the gateway could not start');
  process.exit(1);
});

// One write, so that whoever reads the output (a supervisor, a test) gets the banner whole.
const banner = [
  `Webhook gateway listening on ${gateway.url} (port ${new URL(gateway.url).port} on every network interface; roles: ${config.roles.join(', ')})`,
  `  GraphQL and GraphiQL: ${gateway.url}/graphql   REST: ${gateway.url}/v2/outgoingWebhooks`,
];
if (gateway.database.embeddedUrl) {
  banner.push(`  Embedded database (${config.embeddedDbDir}) served at ${gateway.database.embeddedUrl}`);
}
if (gateway.bootstrap.kind === 'created') {
  // Printed once, on the first start of an empty database; only its hash is stored.
  banner.push(
    '\nCreated the first API client. Keep these credentials; the secret is not shown again:',
    `  client_id:     ${gateway.bootstrap.credentials.clientId}`,
    `  client_secret: ${gateway.bootstrap.credentials.clientSecret}\n`,
  );
}
console.log(banner.join('\n'));

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // A worker waits for its calls in hand, up to the delivery timeout plus 5 s; the rest is quick.
    const forced = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, config.deliveryTimeoutMs + 15_000);
    forced.unref();
    gateway.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'error during shutdown');
        process.exit(1);
      },
    );
  });
}
