/** The constraint a unique violation (SQLSTATE 23505) broke, from postgres.js or PGlite, through drizzle's wrapper. */
export function violatedUniqueConstraint(error: unknown): string | undefined {
  for (let current = error; current instanceof Error; current = current.cause) {
    const pgError = current as Error & { code?: string; constraint_name?: string; constraint?: string };
    if (pgError.code === '23505') return pgError.constraint_name ?? pgError.constraint ?? '';
  }
  return undefined;
}
