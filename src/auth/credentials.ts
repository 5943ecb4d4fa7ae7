import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A URL-safe random credential with `bytes` of entropy. */
export const randomCredential = (bytes = 32) => randomBytes(bytes).toString('base64url');

/**
 * Credentials are high-entropy random strings, so a plain SHA-256 is enough to make a stolen
 * table useless; a slow password hash would only slow every request down.
 */
export const hashCredential = (credential: string) => createHash('sha256').update(credential).digest('hex');

export function credentialMatches(credential: string, expectedHash: string): boolean {
  const actual = Buffer.from(hashCredential(credential), 'hex');
  const expected = Buffer.from(expectedHash, 'hex');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
