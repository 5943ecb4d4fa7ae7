import { connect } from 'node:net';
import { parseArgs } from 'node:util';
import { createApiClient, listApiClients, revokeApiClient } from '../auth/clients';
import { PERMISSIONS, READ_ONLY_PERMISSIONS } from '../auth/principal';
import { ConfigError, loadConfig, type Config } from '../config';
import { connectPostgres, migrateDatabase, openDatabase, type Database } from '../db/database';
import { AppError } from '../errors';
import { createLogger } from '../logger';

const USAGE = `Usage: npm run cli -- <command>

  client create --name NAME --email EMAIL [--read-only] [--json]
                                 create an API client (web services profile); prints its secret once
  client list [--json]           list API clients
  client revoke CLIENT_ID        revoke a client and every token it holds
`;

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * The embedded database belongs to one process at a time: while the gateway runs, the CLI
 * reaches it through the port the gateway serves it on; otherwise it opens the files itself.
 */
async function openForCli(config: Config): Promise<Database> {
  const log = createLogger('warn');
  if (!config.databaseUrl && (await isListening(config.embeddedDbPort))) {
    const database = connectPostgres(`postgres://postgres@127.0.0.1:${config.embeddedDbPort}/postgres`, 1);
    await migrateDatabase(database);
    return database;
  }
  return openDatabase({ ...config, embeddedDbPort: undefined, log });
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      email: { type: 'string' },
      'read-only': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [group, command, argument] = positionals;
  if (values.help || group !== 'client' || !['create', 'list', 'revoke'].includes(command ?? '')) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const database = await openForCli(loadConfig());
  try {
    if (command === 'create') {
      const permissions = values['read-only'] ? READ_ONLY_PERMISSIONS : [...PERMISSIONS];
      const credentials = await createApiClient(database.db, {
        name: values.name ?? '',
        email: values.email ?? '',
        permissions,
      });
      if (values.json) {
        console.log(JSON.stringify({ ClientId: credentials.clientId, ClientSecret: credentials.clientSecret }));
      } else {
        console.log(`Created API client "${values.name}" (${permissions.join(', ')}).`);
        console.log(`  client_id:     ${credentials.clientId}`);
        console.log(`  client_secret: ${credentials.clientSecret}   (shown once; only its hash is stored)`);
      }
    } else if (command === 'list') {
      const clients = await listApiClients(database.db);
      if (values.json) {
        console.log(JSON.stringify(clients));
      } else {
        for (const client of clients) {
          const state = client.revokedAt ? 'revoked' : 'active';
          console.log(`${client.clientId}  ${state.padEnd(7)}  ${client.name} (${client.email})  ${client.permissions.join(',')}`);
        }
      }
    } else {
      if (!argument) throw new AppError('IncorrectQueryParameter', 'client revoke needs a CLIENT_ID');
      await revokeApiClient(database.db, argument);
      console.log(`Revoked API client ${argument}.`);
    }
    return 0;
  } finally {
    await database.close();
  }
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof ConfigError || error instanceof AppError) {
      const field = error instanceof AppError && error.field ? `--${error.field}: ` : '';
      console.error(`${field}${error.message}`);
    } else {
      console.error(error instanceof Error ? error.message : error);
    }
    process.exit(1);
  },
);
