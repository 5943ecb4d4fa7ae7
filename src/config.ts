import { z } from 'zod';

export const ROLES = ['api', 'worker', 'dispatcher'] as const;
export type Role = (typeof ROLES)[number];

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `5s`, `30m`, `2h`, `1d`, `250ms`; a bare number is seconds. */
export function parseDuration(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * DURATION_UNITS_MS[match[2] ?? 's']!);
}

const duration = z.string().transform((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration (use e.g. 30s, 5m, 2h, 1d)` });
    return z.NEVER;
  }
  return ms;
});

// Digits only: a number parser would take a blank as 0 (API_RATE_LIMIT=' ' switching the limit
// off), and 0x10 or 1e3 as numbers.
const integer = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().min(min).max(max));

const boolean = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'must be true or false' })
  .transform((value) => value === 'true' || value === '1' || value === 'yes');

const identifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'must be a plain Postgres identifier');

const environment = z
  .object({
    PORT: integer(0, 65535).default(4000),
    DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, message: 'must be a postgres:// URL' }).optional(),
    EMBEDDED_DB_DIR: z.string().min(1).default('./data'),
    EMBEDDED_DB_PORT: integer(0, 65535).default(5433),
    REDIS_URL: z.url({ protocol: /^rediss?$/, message: 'must be a redis:// URL' }).default('redis://127.0.0.1:6379'),
    REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9:_.-]{1,64}$/, 'must be 1-64 letters, digits, : _ . -').optional(),
    ROLES: z
      .string()
      .default(ROLES.join(','))
      .transform((text, ctx) => {
        const roles = [...new Set(text.split(',').map((role) => role.trim()).filter(Boolean))];
        const unknown = roles.filter((role) => !(ROLES as readonly string[]).includes(role));
        if (unknown.length > 0 || roles.length === 0) {
          ctx.addIssue({ code: 'custom', message: `must be a comma-separated subset of ${ROLES.join(',')}` });
          return z.NEVER;
        }
        return roles as Role[];
      }),
    WATCHED_SCHEMA: identifier.default('public'),
    ACCOUNT_ID: z.string().min(1).max(64).default('local'),
    MULTICAST_MAX_URLS: integer(1, 100).default(10),
    CALL_THROTTLING_MAX: integer(1, 100_000).default(100),
    API_RATE_LIMIT: integer(0, 1_000_000).default(6000),
    WS_MAX_CONNECTIONS_PER_CLIENT: integer(1, 1_000_000).default(100),
    TOKEN_RECHECK_INTERVAL: duration.pipe(z.number().min(1000, 'must be at least 1s').max(3_600_000, 'must be at most 1h')).default(60_000),
    DELIVERY_TIMEOUT_MS: integer(100, 600_000).default(15_000),
    RETRY_SCHEDULE: z
      .string()
      .default('5s,5m,30m,2h,5h,10h,10h')
      .transform((text, ctx) => {
        const steps = text.split(',').map((step) => parseDuration(step));
        if (steps.some((step) => step === undefined)) {
          ctx.addIssue({ code: 'custom', message: 'must be a comma-separated list of durations, e.g. 5s,5m,30m' });
          return z.NEVER;
        }
        return steps as number[];
      }),
    LOG_RETENTION_DAYS: integer(1, 3650).default(30),
    SECRET_ROTATION_OVERLAP: duration.default(24 * 3_600_000),
    ALLOW_PRIVATE_TARGETS: boolean.default(false),
    BOOTSTRAP_CLIENT_ID: z.string().regex(/^[A-Za-z0-9_.-]{8,128}$/, 'must be 8-128 letters, digits, _ . -').optional(),
    BOOTSTRAP_CLIENT_SECRET: z.string().min(16, 'must be at least 16 characters').max(256).optional(),
    LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  })
  .refine((env) => env.WATCHED_SCHEMA !== 'webhook_gateway', {
    message: "must not be the gateway's own schema (webhook_gateway)",
    path: ['WATCHED_SCHEMA'],
  })
  .refine((env) => (env.BOOTSTRAP_CLIENT_ID === undefined) === (env.BOOTSTRAP_CLIENT_SECRET === undefined), {
    message: 'BOOTSTRAP_CLIENT_ID and BOOTSTRAP_CLIENT_SECRET must be set together',
    path: ['BOOTSTRAP_CLIENT_ID'],
  });

export interface Config {
  port: number;
  databaseUrl: string | undefined;
  embeddedDbDir: string;
  embeddedDbPort: number;
  redisUrl: string;
  /** Unset: derived from the database's installation id, so gateways on different databases never share keys. */
  redisPrefix: string | undefined;
  roles: Role[];
  watchedSchema: string;
  accountId: string;
  multicastMaxUrls: number;
  callThrottlingMax: number;
  /** API requests a client profile may make per minute (REST, GraphQL, WebSocket connections and operations); 0: no limit. */
  apiRateLimit: number;
  /** WebSocket connections one client profile may hold open to one API process. */
  wsMaxConnectionsPerClient: number;
  /** How often a long-lived connection or stream checks its token again (revocation takes effect). */
  tokenRecheckMs: number;
  deliveryTimeoutMs: number;
  retryScheduleMs: number[];
  logRetentionDays: number;
  secretRotationOverlapMs: number;
  allowPrivateTargets: boolean;
  bootstrapClient: { clientId: string; clientSecret: string } | undefined;
  logLevel: string;
}

export class ConfigError extends Error {}

/** Reads the configuration once; every other module takes a `Config`, none reads `process.env`. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // An empty variable counts as unset, as in most deployment tools.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = environment.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `${String(issue.path[0] ?? 'environment')}: ${issue.message}`);
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  return {
    port: e.PORT,
    databaseUrl: e.DATABASE_URL,
    embeddedDbDir: e.EMBEDDED_DB_DIR,
    embeddedDbPort: e.EMBEDDED_DB_PORT,
    redisUrl: e.REDIS_URL,
    redisPrefix: e.REDIS_PREFIX,
    roles: e.ROLES,
    watchedSchema: e.WATCHED_SCHEMA,
    accountId: e.ACCOUNT_ID,
    multicastMaxUrls: e.MULTICAST_MAX_URLS,
    callThrottlingMax: e.CALL_THROTTLING_MAX,
    apiRateLimit: e.API_RATE_LIMIT,
    wsMaxConnectionsPerClient: e.WS_MAX_CONNECTIONS_PER_CLIENT,
    tokenRecheckMs: e.TOKEN_RECHECK_INTERVAL,
    deliveryTimeoutMs: e.DELIVERY_TIMEOUT_MS,
    retryScheduleMs: e.RETRY_SCHEDULE,
    logRetentionDays: e.LOG_RETENTION_DAYS,
    secretRotationOverlapMs: e.SECRET_ROTATION_OVERLAP,
    allowPrivateTargets: e.ALLOW_PRIVATE_TARGETS,
    bootstrapClient:
      e.BOOTSTRAP_CLIENT_ID && e.BOOTSTRAP_CLIENT_SECRET
        ? { clientId: e.BOOTSTRAP_CLIENT_ID, clientSecret: e.BOOTSTRAP_CLIENT_SECRET }
        : undefined,
    logLevel: e.LOG_LEVEL,
  };
}
