import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs on stdout. Secrets never reach a log call; redaction is the second line of defence. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'webhook-gateway' },
    redact: {
      paths: [
        'authorization',
        '*.authorization',
        'secret',
        '*.secret',
        'clientSecret',
        '*.clientSecret',
        'client_secret',
        '*.client_secret',
        'access_token',
        'refresh_token',
      ],
      censor: '[redacted]',
    },
  });
}
