import { Writable } from 'node:stream';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectPostgres, type Database } from '../src/db/database';
import { createLogger } from '../src/logger';
import { createTestDatabase } from './support/gateway';

let database: { url: string; drop(): Promise<void> };
let postgres: Database;

beforeAll(async () => {
  database = await createTestDatabase();
  postgres = connectPostgres(database.url, 1);
});

afterAll(async () => {
  await postgres?.close();
  await database?.drop();
});

it("logs a failed query without its parameters (they may hold secrets and message bodies)", async () => {
  const secret = 'whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtYmUtbG9nZ2Vk';
  const error = await postgres.db.execute(sql`select 1 / 0 where ${secret}::text is not null`).catch((failure: unknown) => failure);
  expect(String((error as Error).message)).toContain(secret); // drizzle's message lists them

  const lines: string[] = [];
  const log = createLogger('info', new Writable({ write: (chunk, _encoding, done) => done(void lines.push(String(chunk))) }));
  log.error({ err: error }, 'query failed');

  expect(lines).toHaveLength(1);
  expect(lines[0]).not.toContain(secret);
  const logged = JSON.parse(lines[0]!);
  expect(logged.err.message).toContain('select 1 / 0'); // the statement itself stays, for diagnosis
  expect(JSON.stringify(logged.err)).toContain('division by zero'); // and Postgres' own error
});
