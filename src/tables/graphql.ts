import { builder } from '../graphql/builder';
import { getTableFields, listTables, type TableField } from './catalog';

const TableFieldType = builder.objectRef<TableField>('TableField').implement({
  description: 'A column of a watched table, with its type in Caspio\'s names (AUTONUMBER, STRING, NUMBER, …).',
  fields: (t) => ({
    name: t.exposeString('name'),
    type: t.exposeString('type'),
    unique: t.exposeBoolean('unique'),
    description: t.exposeString('description'),
    displayOrder: t.exposeInt('displayOrder'),
  }),
});

builder.queryFields((t) => ({
  tables: t.stringList({
    description: 'The tables of the watched schema (WATCHED_SCHEMA).',
    resolve: (_root, _args, ctx) => listTables(ctx),
  }),
  tableFields: t.field({
    type: [TableFieldType],
    args: { table: t.arg.string({ required: true }) },
    resolve: (_root, { table }, ctx) => getTableFields(ctx, table),
  }),
}));
