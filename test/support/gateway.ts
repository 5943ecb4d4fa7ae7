import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { createApiClient } from '../../src/auth/clients';
import { PERMISSIONS, READ_ONLY_PERMISSIONS } from '../../src/auth/principal';
import { loadConfig } from '../../src/config';
import { startGateway, type Gateway } from '../../src/gateway';
import { createLogger } from '../../src/logger';

/** The local Postgres server tests create their own databases on. */
export const ADMIN_DATABASE_URL = process.env.TEST_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface HttpResult {
  status: number;
  headers: Headers;
  body: any;
}

export interface TestGateway {
  gateway: Gateway;
  url: string;
  databaseUrl: string;
  /** Creates a profile and returns an access token for it, obtained from POST /oauth/token. */
  token(options?: { readOnly?: boolean; name?: string; email?: string }): Promise<string>;
  request(method: string, path: string, options?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<HttpResult>;
  graphql(query: string, variables?: Record<string, unknown>, token?: string): Promise<HttpResult>;
  stop(): Promise<void>;
}

/** A fresh database of its own, so test files can run in parallel. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `gw_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.href,
    async drop() {
      await deleteInstallationKeys(url.href).catch(() => {}); // best effort: Redis may be down in a fault test
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/**
 * Deletes what the database's gateway left in Redis under its default key prefix: jobs still
 * waiting for their throttle slots would otherwise stay there after the database is gone.
 */
async function deleteInstallationKeys(databaseUrl: string): Promise<void> {
  const db = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  const rows = await db<{ id: string }[]>`select id from webhook_gateway.installation`.catch(() => []);
  await db.end();
  if (!rows[0]) return;
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
  try {
    await deleteKeys(redis, `webhook-gateway:${rows[0].id}:*`);
  } finally {
    redis.disconnect();
  }
}

/** Deletes the Redis keys matching `pattern` (a test's or an installation's, by their prefix). */
export async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

export async function parseResponse(response: Response): Promise<HttpResult> {
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, body };
}

/**
 * Starts a real gateway (real HTTP, Postgres and Redis) on a database of its own, or on
 * `databaseUrl` to run several gateway processes against one database (not dropped on stop).
 */
export async function startTestGateway(env: Record<string, string> = {}, databaseUrl?: string): Promise<TestGateway> {
  const database = databaseUrl ? { url: databaseUrl, drop: async () => {} } : await createTestDatabase();
  let gateway: Gateway;
  try {
    const config = loadConfig({ DATABASE_URL: database.url, PORT: '0', LOG_LEVEL: 'silent', ...env });
    gateway = await startGateway(config, createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'));
  } catch (error) {
    await database.drop(); // a test that expects the start to fail leaves no database behind
    throw error;
  }
  const url = gateway.url;

  const request: TestGateway['request'] = async (method, path, options = {}) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    return parseResponse(await fetch(`${url}${path}`, { method, headers, body }));
  };

  return {
    gateway,
    url,
    databaseUrl: database.url,
    async token(options = {}) {
      const credentials = await createApiClient(gateway.database.db, {
        name: options.name ?? 'John Doe',
        email: options.email ?? 'john.doe@acme.com',
        permissions: options.readOnly ? READ_ONLY_PERMISSIONS : [...PERMISSIONS],
      });
      const response = await request('POST', '/oauth/token', {
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_id: credentials.clientId,
          client_secret: credentials.clientSecret,
        }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      if (response.status !== 200) throw new Error(`token request failed: ${JSON.stringify(response.body)}`);
      return response.body.access_token as string;
    },
    request,
    graphql: (query, variables, token) => request('POST', '/graphql', { token, body: { query, variables } }),
    async stop() {
      try {
        await gateway.stop();
      } finally {
        await database.drop(); // also when stopping failed: no test database is left behind
      }
    },
  };
}
