import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Where drizzle's query errors list the statement's parameters (secrets, message bodies, row data). */
const PARAMS = /\nparams: [\s\S]*?(?=\n {4}at |$)/;

/**
 * Errors as pino logs them, minus the parameters of a failed query: drizzle puts them in the
 * error's message (so its stack) and in a `params` property, which no redaction path can name.
 */
function serializeError(error: Error): Record<string, unknown> {
  const serialized = pino.stdSerializers.err(error) as unknown as Record<string, unknown>;
  for (let current: Record<string, unknown> | undefined = serialized; current; current = current.cause as typeof current) {
    delete current.params;
    if (typeof current.message === 'string') current.message = current.message.replace(PARAMS, '');
    if (typeof current.stack === 'string') current.stack = current.stack.replace(PARAMS, '');
  }
  return serialized;
}

/** Structured JSON logs on stdout. Secrets never reach a log call; redaction is the second line of defence. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'webhook-gateway' },
    serializers: { err: serializeError },
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
  };
  return destination ? pino(options, destination) : pino(options);
}
