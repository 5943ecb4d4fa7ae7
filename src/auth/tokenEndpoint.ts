import type { Context } from 'hono';
import type { Db } from '../db/database';
import type { HttpEnv } from '../server/env';
import { isJsonMediaType } from '../validation';
import { grantClientCredentials, grantRefreshToken, OAuthError } from './tokens';

type TokenParams = Record<string, string | undefined>;

async function readTokenParams(c: Context<HttpEnv>): Promise<TokenParams> {
  const contentType = c.req.header('content-type') ?? '';
  const text = await c.req.text();
  if (isJsonMediaType(contentType)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new OAuthError('invalid_request', 400, 'The body is not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null) throw new OAuthError('invalid_request', 400, 'The body must be an object');
    return Object.fromEntries(
      Object.entries(parsed).map(([key, value]) => [key, typeof value === 'string' ? value : undefined]),
    );
  }
  return Object.fromEntries(new URLSearchParams(text));
}

/** Client credentials from HTTP Basic (RFC 6749 §2.3.1), if given. */
function basicCredentials(header: string | undefined): { id: string; secret: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { id: formDecoded(decoded.slice(0, colon)), secret: formDecoded(decoded.slice(colon + 1)) };
}

/** Basic credentials are form-encoded (RFC 6749 §2.3.1); a malformed `%` escape is taken as it is (and fails to match). */
function formDecoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

async function grant(db: Db, c: Context<HttpEnv>) {
  const params = await readTokenParams(c);
  switch (params.grant_type) {
    case 'client_credentials': {
      const basic = basicCredentials(c.req.header('authorization'));
      const clientId = basic?.id ?? params.client_id;
      const clientSecret = basic?.secret ?? params.client_secret;
      if (!clientId || !clientSecret) throw new OAuthError('invalid_client', 401, 'client_id and client_secret are required');
      return grantClientCredentials(db, clientId, clientSecret);
    }
    case 'refresh_token':
      if (!params.refresh_token) throw new OAuthError('invalid_request', 400, 'refresh_token is required');
      return grantRefreshToken(db, params.refresh_token);
    case undefined:
      throw new OAuthError('invalid_request', 400, 'grant_type is required');
    default:
      throw new OAuthError('unsupported_grant_type', 400, `grant_type '${params.grant_type}' is not supported`);
  }
}

/** `POST /oauth/token`: the client_credentials and refresh_token grants, answered as RFC 6749 says. */
export function createTokenEndpoint(db: Db) {
  return async (c: Context<HttpEnv>) => {
    c.header('Cache-Control', 'no-store');
    try {
      return c.json(await grant(db, c));
    } catch (error) {
      if (!(error instanceof OAuthError)) throw error;
      if (error.error === 'invalid_client') c.header('WWW-Authenticate', 'Basic realm="oauth"');
      return c.json({ error: error.error, error_description: error.message }, error.status);
    }
  };
}
