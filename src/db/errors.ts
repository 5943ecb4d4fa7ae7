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

/** Postgres' own error when it refused a value (SQLSTATE class 22: bad encoding, out of range, …), not the connection or the server. */
export function dataException(error: unknown): Error | undefined {
  return withState(error, (code) => /^22[0-9A-Z]{3}$/.test(code));
}
