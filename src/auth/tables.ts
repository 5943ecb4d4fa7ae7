import { index, text, timestamp } from 'drizzle-orm/pg-core';
import { gatewaySchema } from '../db/namespace';

/** Web services profiles: the API clients that hold OAuth credentials. */
export const apiClients = gatewaySchema.table('api_clients', {
  id: text('id').primaryKey(),
  secretHash: text('secret_hash').notNull(),
  name: text('name').notNull(),
  email: text('email').notNull(),
  permissions: text('permissions').array().notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  revokedAt: timestamp('revoked_at', { withTimezone: true }),
});

/** Access and refresh tokens, stored as SHA-256 hashes only. */
export const oauthTokens = gatewaySchema.table(
  'oauth_tokens',
  {
    tokenHash: text('token_hash').primaryKey(),
    kind: text('kind', { enum: ['access', 'refresh'] }).notNull(),
    clientId: text('client_id')
      .notNull()
      .references(() => apiClients.id, { onDelete: 'cascade' }),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [index('oauth_tokens_client_idx').on(table.clientId), index('oauth_tokens_expires_idx').on(table.expiresAt)],
);
