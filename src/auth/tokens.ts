import { and, eq, gt, isNull } from 'drizzle-orm';
import type { Db } from '../db/database';
import { AppError } from '../errors';
import { holdsNul } from '../validation';
import { credentialMatches, hashCredential, randomCredential } from './credentials';
import type { Principal } from './principal';
import { apiClients, oauthTokens } from './tables';

export const ACCESS_TOKEN_TTL_SECONDS = 86_399;
export const REFRESH_TOKEN_TTL_SECONDS = 30 * 86_400;

export interface TokenResponse {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  refresh_token: string;
}

/** An OAuth 2.0 error (RFC 6749 §5.2); the token endpoint renders it as `{"error": …}`. */
export class OAuthError extends Error {
  constructor(
    readonly error: 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'unsupported_grant_type',
    readonly status: 400 | 401,
    description: string,
  ) {
    super(description);
  }
}

async function issueTokens(db: Db, clientId: string): Promise<TokenResponse> {
  const accessToken = randomCredential();
  const refreshToken = randomCredential();
  const now = Date.now();
  await db.insert(oauthTokens).values([
    {
      tokenHash: hashCredential(accessToken),
      kind: 'access',
      clientId,
      expiresAt: new Date(now + ACCESS_TOKEN_TTL_SECONDS * 1000),
    },
    {
      tokenHash: hashCredential(refreshToken),
      kind: 'refresh',
      clientId,
      expiresAt: new Date(now + REFRESH_TOKEN_TTL_SECONDS * 1000),
    },
  ]);
  return {
    access_token: accessToken,
    token_type: 'bearer',
    expires_in: ACCESS_TOKEN_TTL_SECONDS,
    refresh_token: refreshToken,
  };
}

/** The client_credentials grant. */
export async function grantClientCredentials(db: Db, clientId: string, clientSecret: string): Promise<TokenResponse> {
  const authenticationFailed = () => new OAuthError('invalid_client', 401, 'Client authentication failed');
  // An id that holds a NUL (which Postgres text cannot) is no client's: refused as an unknown one.
  if (holdsNul(clientId)) throw authenticationFailed();
  const [client] = await db
    .select({ secretHash: apiClients.secretHash })
    .from(apiClients)
    .where(and(eq(apiClients.id, clientId), isNull(apiClients.revokedAt)));
  if (!client || !credentialMatches(clientSecret, client.secretHash)) throw authenticationFailed();
  return issueTokens(db, clientId);
}

/** The refresh_token grant; a refresh token is used once and replaced (rotation). */
export async function grantRefreshToken(db: Db, refreshToken: string): Promise<TokenResponse> {
  const [used] = await db
    .update(oauthTokens)
    .set({ revokedAt: new Date() })
    .where(
      and(
        eq(oauthTokens.tokenHash, hashCredential(refreshToken)),
        eq(oauthTokens.kind, 'refresh'),
        isNull(oauthTokens.revokedAt),
        gt(oauthTokens.expiresAt, new Date()),
      ),
    )
    .returning({ clientId: oauthTokens.clientId });
  const [client] = used
    ? await db
        .select({ id: apiClients.id })
        .from(apiClients)
        .where(and(eq(apiClients.id, used.clientId), isNull(apiClients.revokedAt)))
    : [];
  if (!client) throw new OAuthError('invalid_grant', 400, 'The refresh token is invalid, expired or revoked');
  return issueTokens(db, client.id);
}

const unauthorized = (message: string) => new AppError('Unauthorized', message);

/** Resolves `Authorization: Bearer <token>` to the profile it belongs to. */
export async function authenticateBearer(db: Db, authorization: string | null | undefined): Promise<Principal> {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (!match) throw unauthorized('An access token is required: Authorization: Bearer <token>');
  const [row] = await db
    .select({
      clientId: apiClients.id,
      name: apiClients.name,
      email: apiClients.email,
      permissions: apiClients.permissions,
      tokenExpiresAt: oauthTokens.expiresAt,
    })
    .from(oauthTokens)
    .innerJoin(apiClients, eq(apiClients.id, oauthTokens.clientId))
    .where(
      and(
        eq(oauthTokens.tokenHash, hashCredential(match[1]!)),
        eq(oauthTokens.kind, 'access'),
        isNull(oauthTokens.revokedAt),
        gt(oauthTokens.expiresAt, new Date()),
        isNull(apiClients.revokedAt),
      ),
    );
  if (!row) throw unauthorized('The access token is invalid or expired');
  return row;
}
