import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseDuration } from '../src/config';

describe('configuration', () => {
  it('has the contract defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 4000,
      databaseUrl: undefined,
      embeddedDbPort: 5433,
      redisUrl: 'redis://127.0.0.1:6379',
      roles: ['api', 'worker', 'dispatcher'],
      watchedSchema: 'public',
      multicastMaxUrls: 10,
      callThrottlingMax: 100,
      apiRateLimit: 6000,
      wsMaxConnectionsPerClient: 100,
      tokenRecheckMs: 60_000,
      deliveryTimeoutMs: 15_000,
      retryScheduleMs: [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000],
      logRetentionDays: 30,
      secretRotationOverlapMs: 86_400_000,
      allowPrivateTargets: false,
      bootstrapClient: undefined,
      logLevel: 'info',
    });
  });

  it('reads every variable', () => {
    const config = loadConfig({
      PORT: '8080',
      DATABASE_URL: 'postgres://u@db:5432/gw',
      ROLES: 'worker, dispatcher',
      CALL_THROTTLING_MAX: '20',
      API_RATE_LIMIT: '0',
      WS_MAX_CONNECTIONS_PER_CLIENT: '5',
      TOKEN_RECHECK_INTERVAL: '10s',
      RETRY_SCHEDULE: '1s,2m',
      SECRET_ROTATION_OVERLAP: '90m',
      ALLOW_PRIVATE_TARGETS: 'true',
      BOOTSTRAP_CLIENT_ID: 'admin-client',
      BOOTSTRAP_CLIENT_SECRET: 'a-long-enough-secret',
    });
    expect(config).toMatchObject({
      port: 8080,
      databaseUrl: 'postgres://u@db:5432/gw',
      roles: ['worker', 'dispatcher'],
      callThrottlingMax: 20,
      apiRateLimit: 0,
      wsMaxConnectionsPerClient: 5,
      tokenRecheckMs: 10_000,
      retryScheduleMs: [1000, 120_000],
      secretRotationOverlapMs: 5_400_000,
      allowPrivateTargets: true,
      bootstrapClient: { clientId: 'admin-client', clientSecret: 'a-long-enough-secret' },
    });
  });

  it.each([
    ['PORT', { PORT: 'eighty' }],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://x' }],
    ['ROLES', { ROLES: 'api,mailer' }],
    ['WATCHED_SCHEMA', { WATCHED_SCHEMA: 'public; drop table x' }],
    ['CALL_THROTTLING_MAX', { CALL_THROTTLING_MAX: '0' }],
    ['API_RATE_LIMIT', { API_RATE_LIMIT: '-1' }],
    ['API_RATE_LIMIT', { API_RATE_LIMIT: ' ' }],
    ['PORT', { PORT: '0x10' }],
    ['DELIVERY_TIMEOUT_MS', { DELIVERY_TIMEOUT_MS: '1e3' }],
    ['WS_MAX_CONNECTIONS_PER_CLIENT', { WS_MAX_CONNECTIONS_PER_CLIENT: '0' }],
    ['TOKEN_RECHECK_INTERVAL', { TOKEN_RECHECK_INTERVAL: '100ms' }],
    ['RETRY_SCHEDULE', { RETRY_SCHEDULE: '5s,soon' }],
    ['SECRET_ROTATION_OVERLAP', { SECRET_ROTATION_OVERLAP: 'a day' }],
    ['ALLOW_PRIVATE_TARGETS', { ALLOW_PRIVATE_TARGETS: 'maybe' }],
    ['BOOTSTRAP_CLIENT_ID', { BOOTSTRAP_CLIENT_ID: 'only-the-id' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'loud' }],
  ])('names %s when its value is bad', (variable, env) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(new RegExp(`${variable}:`));
  });

  it('parses durations', () => {
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('5s')).toBe(5000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('1d')).toBe(86_400_000);
    expect(parseDuration('30')).toBe(30_000);
    expect(parseDuration('-5s')).toBeUndefined();
  });
});
