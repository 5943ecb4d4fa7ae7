type PgError = Error & { code?: string; constraint_name?: string; constraint?: string };

/** The first error in the chain (postgres.js or PGlite, through drizzle's wrapper) that has this SQLSTATE. */
function withState(error: unknown, matches: (code: string) => boolean): PgError | undefined {
  for (let current = error; current instanceof Error; current = current.cause) {
    const code = (current as PgError).code;
    if (typeof code === 'string' && matches(code)) return current as PgError;
  }
  return undefined;
}

/** The constraint a unique violation (SQLSTATE 23505) broke. */
export function violatedUniqueConstraint(error: unknown): string | undefined {
  const pgError = withState(error, (code) => code === '23505');
  return pgError && (pgError.constraint_name ?? pgError.constraint ?? '');
}

/** Postgres' own error in the chain (it has a SQLSTATE), as opposed to the connection's or the driver's. */
export function postgresError(error: unknown): (Error & { code: string }) | undefined {
  return withState(error, (code) => /^[0-9A-Z]{5}$/.test(code)) as (Error & { code: string }) | undefined;
}

/**
 * Codes of a lost or refused connection: postgres.js's own, the socket's and the resolver's (a
 * failover moving the host name), SQLSTATE classes 08 and 57P (shutdown), 53300 (too many
 * connections) and 25006 (a read-only server: a primary turned standby, until the name follows).
 */
const CONNECTION_CODES =
  /^(CONNECTION_|CONNECT_TIMEOUT$|ECONNREFUSED$|ECONNRESET$|EPIPE$|ETIMEDOUT$|EHOSTUNREACH$|ENETUNREACH$|ENOTFOUND$|EAI_AGAIN$|08|57P0[1-3]$|53300$|25006$)/;

/** Whether the statement failed because Postgres could not be reached (a restart, a failover), not for what it said. */
export function isConnectionError(error: unknown): boolean {
  return withState(error, (code) => CONNECTION_CODES.test(code)) !== undefined;
}

/** SQLSTATEs of a transaction Postgres aborted to break a deadlock (or a serialization conflict): running it again is the remedy. */
export const DEADLOCK_CODES = ['40P01', '40001'];

/** Runs the transaction again, up to `attempts` times in all, while Postgres aborts it to break a deadlock. */
export async function retryOnDeadlock<T>(transaction: () => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await transaction();
    } catch (error) {
      if (!DEADLOCK_CODES.includes(postgresError(error)?.code ?? '') || attempt >= attempts) throw error;
      // A pause of varying length, so that the transactions that met are unlikely to meet again.
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
    }
  }
}
