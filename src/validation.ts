import type { z } from 'zod';
import { badInput, notFound } from './errors';

/** zod error options that say "is required" for a missing value and "must be …" for a wrong one. */
export const expected = (what: string) => ({
  error: (issue: { input: unknown }) => (issue.input === undefined ? 'is required' : `must be ${what}`),
});

/** `application/json`, or a type with the `+json` suffix (RFC 6839), with parameters or none; not `application/json-patch`. */
export const isJsonMediaType = (contentType: string) => /^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(contentType);

/** Postgres text cannot hold U+0000: a client's string with one must not reach a query (Postgres would refuse it, a 500). */
export const holdsNul = (text: string) => text.includes('\u0000');

/** The path of the first string in `value` that holds a NUL. Run on parsed input, which is only as deep as its schema. */
function pathOfNul(value: unknown, path: string[] = []): string[] | undefined {
  if (typeof value === 'string') return holdsNul(value) ? path : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [key, item] of Object.entries(value)) {
    const found = pathOfNul(item, [...path, key]);
    if (found) return found;
  }
  return undefined;
}

/** Parses input with `schema`, turning the first problem into a 400 that names the field. */
export function parseInput<T>(schema: z.ZodType<T>, input: unknown): T {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw badInput('', 'The request body must be a JSON object');
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badInput(issue.path.map(String).join('.'), issue.message);
  }
  const nulAt = pathOfNul(parsed.data);
  if (nulAt) throw badInput(nulAt.join('.'), 'must not contain the NUL character (U+0000)');
  return parsed.data;
}

/** An id or name something is looked up by: one that holds a NUL names nothing, so it is not found, as any unknown one. */
export function checkLookupKey(what: string, key: string): void {
  if (holdsNul(key)) throw notFound(what, key);
}
