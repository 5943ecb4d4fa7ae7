import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';

describe('operations endpoints', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw?.stop());

  it('answers /health without a token', async () => {
    const response = await gw.request('GET', '/health');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ status: 'ok' });
  });

  it('reports Postgres and Redis on /ready', async () => {
    const response = await gw.request('GET', '/ready');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ status: 'ready', checks: { postgres: 'up', redis: 'up' } });
  });

  it('serves Prometheus metrics', async () => {
    await gw.request('GET', '/v2/outgoingWebhooks');
    const response = await gw.request('GET', '/metrics');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/plain/);
    expect(response.body).toMatch(/gateway_http_requests_total\{method="GET",route="\/v2\/outgoingWebhooks",status="401"\} \d+/);
    expect(response.body).toMatch(/process_resident_memory_bytes/);
  });
});

describe('a process without the api role', () => {
  it('serves the operations endpoints but not the API', async () => {
    const gw = await startTestGateway({ ROLES: 'worker' });
    try {
      expect((await gw.request('GET', '/health')).status).toBe(200);
      expect((await gw.request('GET', '/ready')).status).toBe(200);
      expect((await gw.request('GET', '/metrics')).status).toBe(200);
      const api = await gw.request('GET', '/v2/outgoingWebhooks');
      expect(api.status).toBe(404);
      expect(api.body.Code).toBe('ObjectNotFound');
    } finally {
      await gw.stop();
    }
  });
});

describe('readiness without Redis', () => {
  it('answers 503 naming Redis as down, while the API keeps working', async () => {
    // Nothing listens on port 1: Redis is unreachable for this gateway.
    const gw = await startTestGateway({ REDIS_URL: 'redis://127.0.0.1:1' });
    try {
      const response = await gw.request('GET', '/ready');
      expect(response.status).toBe(503);
      expect(response.body).toEqual({ status: 'unavailable', checks: { postgres: 'up', redis: 'down' } });
      const token = await gw.token();
      expect((await gw.request('GET', '/v2/outgoingWebhooks', { token })).status).toBe(200);
    } finally {
      await gw.stop();
    }
  });
});
