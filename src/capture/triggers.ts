import { sql } from 'drizzle-orm';
import type { Db } from '../db/database';
import { queryRows } from '../db/database';
import type { EventType } from '../events/tables';
import { listTableNames } from '../tables/catalog';

export const OUTBOX_CHANNEL = 'webhook_gateway_outbox';

const TRIGGER_PREFIX = 'webhook_gateway_';
const OPERATIONS: Record<EventType, 'insert' | 'update' | 'delete'> = {
  'table.recordInsert': 'insert',
  'table.recordUpdate': 'update',
  'table.recordDelete': 'delete',
};

// Names the transaction-scoped advisory lock that serialises trigger changes between processes.
const SYNC_LOCK_KEY = 0x77686778;

export interface TriggerChanges {
  installed: string[];
  removed: string[];
  /** Tables that events name but that do not exist (dropped or renamed). */
  missing: string[];
}

/** A string literal for DDL, which takes no parameters. */
const quoteLiteral = (text: string) => `'${text.replaceAll("'", "''")}'`;

function createTriggerSql(schema: string, table: string, operation: 'insert' | 'update' | 'delete') {
  const name = sql.identifier(`${TRIGGER_PREFIX}${operation}`);
  const target = sql`${sql.identifier(schema)}.${sql.identifier(table)}`;
  switch (operation) {
    case 'insert':
      return sql`create or replace trigger ${name} after insert on ${target} referencing new table as new_rows
        for each statement execute function webhook_gateway.capture_inserts()`;
    case 'delete':
      return sql`create or replace trigger ${name} after delete on ${target} referencing old table as old_rows
        for each statement execute function webhook_gateway.capture_deletes()`;
    case 'update':
      // An update that changes no value is filtered here, before the function is even called. The
      // rows' images are compared: comparing values needs an equality operator for every column
      // (json has none). The table's name goes as an argument: the trigger's copies on a
      // partitioned table's partitions capture under it, the name events use.
      return sql`create or replace trigger ${name} after update on ${target}
        for each row when (old.* *<> new.*) execute function webhook_gateway.capture_update(${sql.raw(quoteLiteral(table))})`;
  }
}

/**
 * Makes the capture triggers match the events: a table gets an insert, update or delete trigger
 * exactly while an active event of that type (on an enabled webhook) names it. Runs in the
 * caller's transaction, so a trigger appears and disappears with the event that needs it.
 */
export async function syncCaptureTriggers(db: Db, schema: string): Promise<TriggerChanges> {
  await db.execute(sql`select pg_advisory_xact_lock(${SYNC_LOCK_KEY})`);
  const needed = await queryRows<{ table_name: string; event_type: EventType }>(
    db,
    sql`select distinct e.object_name as table_name, e.event_type
        from webhook_gateway.webhook_events e join webhook_gateway.webhooks w on w.id = e.webhook_id
        where e.enabled and w.enabled`,
  );
  // A partitioned table's row trigger has copies on its partitions (tgparentid names the
  // original): they come and go with it, cannot be dropped on their own, and take the place of
  // the partition's own trigger of that name (Postgres makes that trigger a copy).
  const installed = () =>
    queryRows<{ table_name: string; trigger_name: string; copy: boolean }>(
      db,
      sql`select c.relname as table_name, t.tgname as trigger_name, t.tgparentid <> 0 as copy
          from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = ${schema} and not t.tgisinternal and t.tgname like ${`${TRIGGER_PREFIX}%`}`,
    );
  const tables = new Set(await listTableNames(db, schema));
  const wanted = new Set(needed.map((row) => `${row.table_name}\u0000${TRIGGER_PREFIX}${OPERATIONS[row.event_type]}`));
  const changes: TriggerChanges = { installed: [], removed: [], missing: [] };

  // Unwanted triggers go first: a partitioned table's takes its copies with it, a partition's own
  // among them, which is then made again below.
  for (const row of await installed()) {
    if (row.copy || wanted.has(`${row.table_name}\u0000${row.trigger_name}`)) continue;
    await db.execute(
      sql`drop trigger if exists ${sql.identifier(row.trigger_name)} on ${sql.identifier(schema)}.${sql.identifier(row.table_name)}`,
    );
    changes.removed.push(`${row.table_name}.${row.trigger_name.slice(TRIGGER_PREFIX.length)}`);
  }
  const existing = new Set((await installed()).map((row) => `${row.table_name}\u0000${row.trigger_name}`));
  for (const row of needed) {
    const operation = OPERATIONS[row.event_type];
    const key = `${row.table_name}\u0000${TRIGGER_PREFIX}${operation}`;
    if (existing.has(key)) continue;
    if (!tables.has(row.table_name)) {
      if (!changes.missing.includes(row.table_name)) changes.missing.push(row.table_name);
      continue;
    }
    await db.execute(createTriggerSql(schema, row.table_name, operation));
    existing.add(key);
    changes.installed.push(`${row.table_name}.${operation}`);
  }
  return changes;
}
