import { sql } from 'drizzle-orm';
import { requirePermission } from '../auth/principal';
import type { ServiceContext } from '../context';
import { queryRows, type Db } from '../db/database';
import { notFound } from '../errors';
import { checkLookupKey } from '../validation';

/** A column of a watched table, with Caspio's name for its type. */
export interface TableField {
  name: string;
  type: string;
  unique: boolean;
  description: string;
  displayOrder: number;
}

interface ColumnRow {
  name: string;
  type_name: string;
  autonumber: boolean;
  unique: boolean;
  description: string;
  position: number;
}

const SCALAR_TYPES: Record<string, string> = {
  int2: 'INTEGER',
  int4: 'INTEGER',
  int8: 'INTEGER',
  numeric: 'NUMBER',
  float4: 'NUMBER',
  float8: 'NUMBER',
  money: 'CURRENCY',
  bool: 'YES/NO',
  varchar: 'STRING',
  bpchar: 'STRING',
  char: 'STRING',
  name: 'STRING',
  citext: 'STRING',
  text: 'TEXT',
  json: 'TEXT',
  jsonb: 'TEXT',
  xml: 'TEXT',
  date: 'DATE/TIME',
  time: 'DATE/TIME',
  timetz: 'DATE/TIME',
  timestamp: 'DATE/TIME',
  timestamptz: 'DATE/TIME',
  uuid: 'GUID',
  bytea: 'FILE',
};

const LIST_TYPES: Record<string, string> = {
  NUMBER: 'LIST-NUMBER',
  INTEGER: 'LIST-NUMBER',
  CURRENCY: 'LIST-NUMBER',
  'DATE/TIME': 'LIST-DATE/TIME',
};

/** Maps a Postgres type (pg_type.typname) to Caspio's field type names. */
export function caspioType(typeName: string, autonumber: boolean): string {
  if (typeName.startsWith('_')) {
    const element = SCALAR_TYPES[typeName.slice(1)] ?? 'TEXT';
    return LIST_TYPES[element] ?? 'LIST-STRING';
  }
  if (autonumber && typeName.startsWith('int')) return 'AUTONUMBER';
  return SCALAR_TYPES[typeName] ?? 'TEXT';
}

/** Ordinary and partitioned tables of the schema, by name. */
export async function listTableNames(db: Db, schema: string): Promise<string[]> {
  const rows = await queryRows<{ name: string }>(
    db,
    sql`select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = ${schema} and c.relkind in ('r', 'p') order by c.relname`,
  );
  return rows.map((row) => row.name);
}

/** Postgres keeps at most this many bytes of a name, and compares a longer one by its first 63. */
const MAX_IDENTIFIER_BYTES = 63;

/** The columns of a table in column order; undefined when there is no such table. */
export async function tableColumns(db: Db, schema: string, table: string): Promise<TableField[] | undefined> {
  if (Buffer.byteLength(table) > MAX_IDENTIFIER_BYTES) return undefined; // no table has such a name
  const rows = await queryRows<ColumnRow>(
    db,
    sql`select a.attname as name, t.typname as type_name, a.attnum::int as position,
          (a.attidentity <> '' or coalesce(pg_get_expr(d.adbin, d.adrelid) like 'nextval(%', false)) as autonumber,
          exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisunique
                  and i.indnkeyatts = 1 and i.indkey[0] = a.attnum) as unique,
          coalesce(col_description(c.oid, a.attnum), '') as description
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        join pg_type t on t.oid = a.atttypid
        left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
        where n.nspname = ${schema} and c.relname = ${table} and c.relkind in ('r', 'p')
        order by a.attnum`,
  );
  if (rows.length === 0) {
    const exists = await listTableNames(db, schema);
    return exists.includes(table) ? [] : undefined;
  }
  return rows.map((row, index) => ({
    name: row.name,
    type: caspioType(row.type_name, row.autonumber),
    unique: row.unique,
    description: row.description,
    displayOrder: index + 1,
  }));
}

export async function listTables(ctx: ServiceContext): Promise<string[]> {
  requirePermission(ctx.principal, 'webhooks:read');
  return listTableNames(ctx.db, ctx.config.watchedSchema);
}

export async function getTableFields(ctx: ServiceContext, table: string): Promise<TableField[]> {
  requirePermission(ctx.principal, 'webhooks:read');
  checkLookupKey('Table', table);
  const fields = await tableColumns(ctx.db, ctx.config.watchedSchema, table);
  if (!fields) throw notFound('Table', table);
  return fields;
}
