import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiClient, revokeApiClient } from '../src/auth/clients';
import { PERMISSIONS } from '../src/auth/principal';
import { queryRows } from '../src/db/database';
import { createTestDatabase, startTestGateway, type TestGateway } from './support/gateway';

let gw: TestGateway;
let credentials: { clientId: string; clientSecret: string };

beforeAll(async () => {
  gw = await startTestGateway({ BOOTSTRAP_CLIENT_ID: 'bootstrap-admin', BOOTSTRAP_CLIENT_SECRET: 'bootstrap-secret-0123456789' });
  credentials = await createApiClient(gw.gateway.database.db, {
    name: 'John Doe',
    email: 'john.doe@acme.com',
    permissions: [...PERMISSIONS],
  });
});

afterAll(() => gw?.stop());

const form = (fields: Record<string, string>) => ({
  body: new URLSearchParams(fields).toString(),
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
});

describe('POST /oauth/token', () => {
  it('grants client_credentials from a form body', async () => {
    const response = await gw.request(
      'POST',
      '/oauth/token',
      form({ grant_type: 'client_credentials', client_id: credentials.clientId, client_secret: credentials.clientSecret }),
    );
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      access_token: expect.any(String),
      token_type: 'bearer',
      expires_in: 86399,
      refresh_token: expect.any(String),
    });
    expect(response.headers.get('cache-control')).toBe('no-store');
    const api = await gw.request('GET', '/v2/outgoingWebhooks', { token: response.body.access_token });
    expect(api.status).toBe(200);
  });

  it('grants client_credentials from a JSON body and from HTTP Basic', async () => {
    const json = await gw.request('POST', '/oauth/token', {
      body: { grant_type: 'client_credentials', client_id: credentials.clientId, client_secret: credentials.clientSecret },
    });
    expect(json.status).toBe(200);
    const basic = Buffer.from(`${credentials.clientId}:${credentials.clientSecret}`).toString('base64');
    const viaBasic = await gw.request('POST', '/oauth/token', {
      ...form({ grant_type: 'client_credentials' }),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
    });
    expect(viaBasic.status).toBe(200);
  });

  it('refuses a wrong secret or an unknown client with 401 invalid_client', async () => {
    const attempts: Record<string, string>[] = [
      { client_id: credentials.clientId, client_secret: 'wrong' },
      { client_id: 'unknown-client', client_secret: credentials.clientSecret },
      { client_id: credentials.clientId },
    ];
    for (const fields of attempts) {
      const response = await gw.request('POST', '/oauth/token', form({ grant_type: 'client_credentials', ...fields }));
      expect(response.status).toBe(401);
      expect(response.body.error).toBe('invalid_client');
    }
    // A malformed escape in HTTP Basic credentials is a wrong credential, not a server error.
    const malformed = await gw.request('POST', '/oauth/token', {
      ...form({ grant_type: 'client_credentials' }),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('abc%zz:secret%').toString('base64')}` },
    });
    expect(malformed.status).toBe(401);
    expect(malformed.body.error).toBe('invalid_client');
  });

  it('refuses a missing or unknown grant_type', async () => {
    const missing = await gw.request('POST', '/oauth/token', form({ client_id: 'x' }));
    expect(missing.status).toBe(400);
    expect(missing.body.error).toBe('invalid_request');
    const unknown = await gw.request('POST', '/oauth/token', form({ grant_type: 'password' }));
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe('unsupported_grant_type');
  });

  it('rotates refresh tokens: a refresh token works once', async () => {
    const first = await gw.request(
      'POST',
      '/oauth/token',
      form({ grant_type: 'client_credentials', client_id: credentials.clientId, client_secret: credentials.clientSecret }),
    );
    const refreshed = await gw.request('POST', '/oauth/token', form({ grant_type: 'refresh_token', refresh_token: first.body.refresh_token }));
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.access_token).not.toBe(first.body.access_token);
    expect((await gw.request('GET', '/v2/outgoingWebhooks', { token: refreshed.body.access_token })).status).toBe(200);
    const reused = await gw.request('POST', '/oauth/token', form({ grant_type: 'refresh_token', refresh_token: first.body.refresh_token }));
    expect(reused.status).toBe(400);
    expect(reused.body.error).toBe('invalid_grant');
  });

  it('stores tokens and secrets as their SHA-256, never as issued', async () => {
    const token = await gw.token();
    const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');
    const [stored] = await queryRows<{ token: string; client: string }>(
      gw.gateway.database.db,
      sql`select (select row_to_json(t)::text from webhook_gateway.oauth_tokens t where token_hash = ${sha256(token)}) as token,
                 (select row_to_json(c)::text from webhook_gateway.api_clients c where secret_hash = ${sha256(credentials.clientSecret)}) as client`,
    );
    // Found by their hashes, and neither row holds the value itself in any column.
    expect(stored!.token).toEqual(expect.any(String));
    expect(stored!.client).toEqual(expect.any(String));
    expect(stored!.token).not.toContain(token);
    expect(stored!.client).not.toContain(credentials.clientSecret);
  });
});

describe('bearer tokens', () => {
  it('answers an expired token with 401', async () => {
    const token = await gw.token();
    expect((await gw.request('GET', '/v2/outgoingWebhooks', { token })).status).toBe(200);
    await gw.gateway.database.db.execute(
      sql`update webhook_gateway.oauth_tokens set expires_at = now() - interval '1 second'
          where token_hash = ${createHash('sha256').update(token).digest('hex')}`,
    );
    const expired = await gw.request('GET', '/v2/outgoingWebhooks', { token });
    expect(expired.status).toBe(401);
    expect(expired.body.Code).toBe('Unauthorized');
  });

  it('stops accepting the tokens of a revoked client', async () => {
    const client = await createApiClient(gw.gateway.database.db, { name: 'Temp', email: 'temp@acme.com', permissions: ['webhooks:read'] });
    const granted = await gw.request(
      'POST',
      '/oauth/token',
      form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }),
    );
    await revokeApiClient(gw.gateway.database.db, client.clientId);
    expect((await gw.request('GET', '/v2/outgoingWebhooks', { token: granted.body.access_token })).status).toBe(401);
    const refresh = await gw.request('POST', '/oauth/token', form({ grant_type: 'refresh_token', refresh_token: granted.body.refresh_token }));
    expect(refresh.body.error).toBe('invalid_grant');
    const again = await gw.request(
      'POST',
      '/oauth/token',
      form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }),
    );
    expect(again.status).toBe(401);
  });
});

describe('the bootstrap profile', () => {
  it('exists with the configured credentials and full permissions', async () => {
    const response = await gw.request(
      'POST',
      '/oauth/token',
      form({ grant_type: 'client_credentials', client_id: 'bootstrap-admin', client_secret: 'bootstrap-secret-0123456789' }),
    );
    expect(response.status).toBe(200);
    const created = await gw.request('POST', '/v2/outgoingWebhooks', {
      token: response.body.access_token,
      body: { Name: 'by-bootstrap', OutgoingUrls: ['https://bootstrap.example.com/hook'] },
    });
    expect(created.status).toBe(201);
    expect(gw.gateway.bootstrap).toEqual({ kind: 'configured', clientId: 'bootstrap-admin' });
  });

  it('is created once on an empty database when none is configured', async () => {
    const second = await startTestGateway();
    try {
      expect(second.gateway.bootstrap.kind).toBe('created');
      if (second.gateway.bootstrap.kind !== 'created') return;
      const { clientId, clientSecret } = second.gateway.bootstrap.credentials;
      const granted = await second.request(
        'POST',
        '/oauth/token',
        form({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
      );
      expect(granted.status).toBe(200);
    } finally {
      await second.stop();
    }
  });
});

describe('the client CLI', () => {
  const run = promisify(execFile);
  it('creates, lists and revokes profiles', async () => {
    const database = await createTestDatabase();
    const env = { ...process.env, DATABASE_URL: database.url, LOG_LEVEL: 'silent' };
    const cli = (...args: string[]) => run('node', ['--import', 'tsx', 'src/cli/main.ts', ...args], { env });
    try {
      const created = await cli('client', 'create', '--name', 'John Doe', '--email', 'john.doe@acme.com', '--read-only', '--json');
      const printed = JSON.parse(created.stdout);
      expect(printed).toEqual({ ClientId: expect.stringMatching(/^[0-9a-f]{32}$/), ClientSecret: expect.any(String) });

      const listed = JSON.parse((await cli('client', 'list', '--json')).stdout);
      expect(listed).toEqual([
        expect.objectContaining({ clientId: printed.ClientId, name: 'John Doe', permissions: ['webhooks:read'], revokedAt: null }),
      ]);

      await cli('client', 'revoke', printed.ClientId);
      const after = JSON.parse((await cli('client', 'list', '--json')).stdout);
      expect(after[0].revokedAt).not.toBeNull();

      await expect(cli('client', 'create', '--name', 'X', '--email', 'not-an-email')).rejects.toMatchObject({
        stderr: expect.stringContaining('--email'),
      });
    } finally {
      await database.drop();
    }
  });
});
