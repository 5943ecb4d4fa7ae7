import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { SQL } from 'drizzle-orm';
import { PgDialect, type PgDatabase, type PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import postgres from 'postgres';
import type { Logger } from '../logger';
import { serveEmbedded } from './embeddedServer';
import { GATEWAY_SCHEMA } from './namespace';
import * as schema from './schema';

export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface Database {
  db: Db;
  /** `postgres` when DATABASE_URL is set, `embedded` for the in-process PGlite. */
  kind: 'postgres' | 'embedded';
  /** Where other programs reach the embedded database, when it is served. */
  embeddedUrl?: string;
  /** Calls `onNotify` on every NOTIFY on `channel`; resolves to a function that stops listening. */
  listen(channel: string, onNotify: () => void): Promise<() => Promise<void>>;
  /** Runs `task` while no other gateway process runs a startup task (migrations, bootstrap). */
  runExclusive<T>(task: () => Promise<T>): Promise<T>;
  /** Embedded only: stops serving other programs, rolling back their open transactions. */
  stopServing?(): Promise<void>;
  close(): Promise<void>;
}

const MIGRATIONS = {
  migrationsFolder: fileURLToPath(new URL('../../drizzle', import.meta.url)),
  migrationsSchema: GATEWAY_SCHEMA,
  migrationsTable: 'migrations',
};

// Any constant shared by all gateway processes; it names the startup advisory lock.
const STARTUP_LOCK_KEY = 0x77686777;

export function connectPostgres(url: string, poolSize = 10): Database {
  const sql = postgres(url, { max: poolSize, onnotice: () => {}, connection: { application_name: 'webhook-gateway' } });
  const db = drizzlePostgres(sql, { schema });
  return {
    db,
    kind: 'postgres',
    async listen(channel, onNotify) {
      // postgres.js keeps a connection of its own for LISTEN and listens again after a reconnect.
      const { unlisten } = await sql.listen(channel, () => onNotify());
      return unlisten;
    },
    async runExclusive(task) {
      const connection = await sql.reserve();
      try {
        await connection`select pg_advisory_lock(${STARTUP_LOCK_KEY})`;
        try {
          return await task();
        } finally {
          await connection`select pg_advisory_unlock(${STARTUP_LOCK_KEY})`;
        }
      } finally {
        connection.release();
      }
    },
    close: () => sql.end({ timeout: 5 }),
  };
}

export interface EmbeddedOptions {
  dataDir: string;
  /** Serve the database to other programs on this loopback port (0 picks a free one); undefined: not served. */
  port?: number;
}

export async function openEmbedded(options: EmbeddedOptions): Promise<Database> {
  // Loaded lazily: deployments with DATABASE_URL never pay for the WASM build.
  const { PGlite } = await import('@electric-sql/pglite');
  mkdirSync(options.dataDir, { recursive: true });
  const pglite = await PGlite.create({ dataDir: options.dataDir });
  const db = drizzlePglite(pglite, { schema }) as unknown as Db;
  const server = options.port === undefined ? undefined : await serveEmbedded(pglite, options.port);
  return {
    db,
    kind: 'embedded',
    embeddedUrl: server && `postgres://postgres@${server.address}/postgres?sslmode=disable`,
    async listen(channel, onNotify) {
      const unlisten = await pglite.listen(channel, () => onNotify());
      return unlisten;
    },
    runExclusive: (task) => task(),
    stopServing: async () => server?.stop(),
    async close() {
      await server?.stop();
      await pglite.close();
    },
  };
}

export async function migrateDatabase(database: Database): Promise<void> {
  if (database.kind === 'postgres') {
    await migratePostgres(database.db as Parameters<typeof migratePostgres>[0], MIGRATIONS);
  } else {
    await migratePglite(database.db as unknown as Parameters<typeof migratePglite>[0], MIGRATIONS);
  }
}

export interface OpenOptions {
  databaseUrl: string | undefined;
  embeddedDbDir: string;
  embeddedDbPort: number | undefined;
  log: Logger;
}

/** Opens the configured database and brings its schema up to date. */
export async function openDatabase(options: OpenOptions): Promise<Database> {
  const database = options.databaseUrl
    ? connectPostgres(options.databaseUrl)
    : await openEmbedded({ dataDir: options.embeddedDbDir, port: options.embeddedDbPort });
  try {
    await database.runExclusive(() => migrateDatabase(database));
  } catch (error) {
    await database.close();
    throw error;
  }
  options.log.info({ database: database.kind }, 'database ready');
  return database;
}

const dialect = new PgDialect();

/**
 * Rows of a raw SQL query: postgres.js answers with an array, PGlite with `{ rows }`.
 * `prepared`: for the hot path's statements, whose text does not change (batches go as arrays):
 * on postgres.js the statement is prepared once per connection and planned once, not per call.
 * That one plan may be made while the tables are nearly empty (a new installation, statistics
 * not yet gathered), and then kept: a join to a large table must not leave it free to scan it.
 * Reach large tables by primary key, with the ids as an array (`id = any(array(select …))`) or
 * in a lateral lookup (`offset 0` keeping it from being merged into a join); a plain join or
 * `exists` was planned as a scan of the whole table, run on every batch.
 */
export async function queryRows<T>(db: Db, query: SQL, options: { prepared?: boolean } = {}): Promise<T[]> {
  // drizzle keeps the driver's client on the session: a transaction's is its own connection.
  const client = (db as unknown as { session?: { client?: postgres.Sql } }).session?.client;
  if (options.prepared && typeof client?.unsafe === 'function') {
    const { sql: text, params } = dialect.sqlToQuery(query);
    return (await client.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true })) as unknown as T[];
  }
  const result = (await db.execute(query)) as unknown;
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}
