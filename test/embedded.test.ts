import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { startGateway } from '../src/gateway';
import { createLogger } from '../src/logger';
import { parseResponse } from './support/gateway';

it('runs on the embedded database when DATABASE_URL is unset, and serves it to other programs', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gw-embedded-'));
  const config = loadConfig({ PORT: '0', EMBEDDED_DB_DIR: dataDir, EMBEDDED_DB_PORT: '0', LOG_LEVEL: 'silent' });
  const gateway = await startGateway(config, createLogger('silent'));
  try {
    expect(gateway.database.kind).toBe('embedded');
    expect(gateway.bootstrap.kind).toBe('created');
    if (gateway.bootstrap.kind !== 'created') return;
    const { clientId, clientSecret } = gateway.bootstrap.credentials;
    const token = await parseResponse(
      await fetch(`${gateway.url}/oauth/token`, {
        method: 'POST',
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
      }),
    );
    const created = await parseResponse(
      await fetch(`${gateway.url}/v2/outgoingWebhooks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.body.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ Name: 'EmbeddedHook', OutgoingUrls: ['https://embedded.example.com/hook'] }),
      }),
    );
    expect(created.status).toBe(201);

    // Another program (psql, the user's application) reaches the same database over the served port.
    const client = postgres(gateway.database.embeddedUrl!, { max: 1 });
    try {
      const rows = await client`select name from webhook_gateway.webhooks`;
      expect(rows.map((row) => row.name)).toEqual(['EmbeddedHook']);
    } finally {
      await client.end();
    }
  } finally {
    await gateway.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
