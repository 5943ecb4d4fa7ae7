import { eq } from 'drizzle-orm';
import { boolean, text } from 'drizzle-orm/pg-core';
import type { Db } from './database';
import { gatewaySchema } from './namespace';

/** One row: this installation's random id, made by the migrations. */
export const installation = gatewaySchema.table('installation', {
  singleton: boolean('singleton').primaryKey().default(true),
  id: text('id').notNull(),
});

export async function installationId(db: Db): Promise<string> {
  const [row] = await db.select({ id: installation.id }).from(installation).where(eq(installation.singleton, true));
  if (!row) throw new Error('the installation row is missing: were the migrations run?');
  return row.id;
}
