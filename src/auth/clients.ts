import { randomBytes } from 'node:crypto';
import { asc, eq } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../db/database';
import { AppError, badInput } from '../errors';
import { hashCredential, randomCredential } from './credentials';
import { PERMISSIONS, type Permission } from './principal';
import { apiClients } from './tables';

export interface NewClientCredentials {
  clientId: string;
  clientSecret: string;
}

export interface ApiClientSummary {
  clientId: string;
  name: string;
  email: string;
  permissions: string[];
  createdAt: Date;
  revokedAt: Date | null;
}

const newClient = z.object({
  name: z.string().trim().min(1, 'is required').max(255),
  email: z.email('must be an email address').max(255),
  permissions: z.array(z.enum(PERMISSIONS)).min(1),
});

/** Creates a web services profile; the secret is returned here once and only its hash is kept. */
export async function createApiClient(
  db: Db,
  input: { name: string; email: string; permissions: Permission[] },
): Promise<NewClientCredentials> {
  const parsed = newClient.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badInput(String(issue.path[0]), issue.message);
  }
  const clientId = randomBytes(16).toString('hex');
  const clientSecret = randomCredential(32);
  await db.insert(apiClients).values({ id: clientId, secretHash: hashCredential(clientSecret), ...parsed.data });
  return { clientId, clientSecret };
}

export async function listApiClients(db: Db): Promise<ApiClientSummary[]> {
  const rows = await db.select().from(apiClients).orderBy(asc(apiClients.createdAt));
  return rows.map(({ id, name, email, permissions, createdAt, revokedAt }) => ({
    clientId: id,
    name,
    email,
    permissions,
    createdAt,
    revokedAt,
  }));
}

/** Revokes a profile: its secret stops working, and so do all its tokens (they are checked against the profile). */
export async function revokeApiClient(db: Db, clientId: string): Promise<void> {
  const revoked = await db
    .update(apiClients)
    .set({ revokedAt: new Date() })
    .where(eq(apiClients.id, clientId))
    .returning({ id: apiClients.id });
  if (revoked.length === 0) throw new AppError('ObjectNotFound', `API client '${clientId}' was not found`);
}

export type BootstrapOutcome =
  | { kind: 'configured'; clientId: string }
  | { kind: 'created'; credentials: NewClientCredentials }
  | { kind: 'existing' };

const BOOTSTRAP_PROFILE = { name: 'Gateway Admin', email: 'admin@gateway.local' };

/**
 * With BOOTSTRAP_CLIENT_ID/SECRET: make sure that full-permission profile exists with that secret.
 * Without: on a database with no profile at all, create one so that a new install can be used.
 */
export async function ensureBootstrapClient(
  db: Db,
  configured: NewClientCredentials | undefined,
): Promise<BootstrapOutcome> {
  if (configured) {
    const values = {
      secretHash: hashCredential(configured.clientSecret),
      permissions: [...PERMISSIONS],
      revokedAt: null,
    };
    await db
      .insert(apiClients)
      .values({ id: configured.clientId, ...BOOTSTRAP_PROFILE, ...values })
      .onConflictDoUpdate({ target: apiClients.id, set: values });
    return { kind: 'configured', clientId: configured.clientId };
  }
  const [anyClient] = await db.select({ id: apiClients.id }).from(apiClients).limit(1);
  if (anyClient) return { kind: 'existing' };
  const credentials = await createApiClient(db, { ...BOOTSTRAP_PROFILE, permissions: [...PERMISSIONS] });
  return { kind: 'created', credentials };
}

