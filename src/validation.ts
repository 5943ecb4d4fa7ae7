import type { z } from 'zod';
import { badInput } from './errors';

/** zod error options that say "is required" for a missing value and "must be …" for a wrong one. */
export const expected = (what: string) => ({
  error: (issue: { input: unknown }) => (issue.input === undefined ? 'is required' : `must be ${what}`),
});

/** Parses input with `schema`, turning the first problem into a 400 that names the field. */
export function parseInput<T>(schema: z.ZodType<T>, input: unknown): T {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw badInput('', 'The request body must be a JSON object');
  }
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw badInput(issue.path.map(String).join('.'), issue.message);
}
