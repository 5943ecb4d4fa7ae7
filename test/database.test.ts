import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectPostgres, queryRows, type Database } from '../src/db/database';
import { createTestDatabase } from './support/gateway';

let database: Database;
let drop: () => Promise<void>;

beforeAll(async () => {
  const created = await createTestDatabase();
  drop = created.drop;
  database = connectPostgres(created.url);
  await database.db.execute(sql`create table notes (id int primary key)`);
});

afterAll(async () => {
  await database?.close();
  await drop?.();
});

it('prepares a statement on the connection of the transaction it is given, and rolls back with it', async () => {
  const backendOf = async (db: Parameters<typeof queryRows>[0], prepared: boolean) =>
    (await queryRows<{ pid: number }>(db, sql`select pg_backend_pid() as pid where ${1} = 1`, { prepared }))[0]!.pid;
  await expect(
    database.db.transaction(async (tx) => {
      expect(await backendOf(tx, true)).toBe(await backendOf(tx, false));
      await queryRows(tx, sql`insert into notes (id) select unnest(${sql.param([1, 2])}::int[])`, { prepared: true });
      const [named] = await queryRows<{ n: number }>(
        tx,
        sql`select count(*)::int as n from pg_prepared_statements where statement like 'insert into notes%'`,
      );
      expect(named!.n).toBe(1); // prepared on the transaction's connection, for the next batch to reuse
      throw new Error('roll back');
    }),
  ).rejects.toThrow('roll back');
  expect(await queryRows(database.db, sql`select id from notes`, { prepared: true })).toEqual([]);
});
