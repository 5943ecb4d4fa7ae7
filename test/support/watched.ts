import type postgres from 'postgres';
import type { TestGateway } from './gateway';

/**
 * A table (`id serial, note text`) in the watched schema and a webhook on it that fires on
 * inserts, made as a user would (REST); returns the webhook as the API answered.
 */
export async function createWatchedWebhook(
  gateway: Pick<TestGateway, 'request'>,
  token: string,
  app: postgres.Sql,
  options: { table: string; urls: string[]; webhook?: Record<string, unknown> },
): Promise<Record<string, any>> {
  await app.unsafe(`create table "${options.table}" (id serial primary key, note text)`);
  const created = await gateway.request('POST', '/v2/outgoingWebhooks', {
    token,
    body: { Name: options.table, OutgoingUrls: options.urls, ...options.webhook },
  });
  if (created.status !== 201) throw new Error(`webhook not created: ${JSON.stringify(created.body)}`);
  const event = await gateway.request('POST', `/v2/outgoingWebhooks/${created.body.Id}/events`, {
    token,
    body: { EventType: 'table.recordInsert', ObjectName: options.table },
  });
  if (event.status !== 201) throw new Error(`event not created: ${JSON.stringify(event.body)}`);
  return created.body;
}
