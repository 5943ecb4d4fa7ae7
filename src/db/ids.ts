import { randomInt, randomUUID } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** Caspio-style resource ids: six lowercase letters and digits, e.g. `0994on`. */
export function newShortId(): string {
  let id = '';
  for (let i = 0; i < 6; i++) id += ALPHABET[randomInt(ALPHABET.length)];
  return id;
}

/**
 * A UUID version 7 (RFC 9562): a millisecond timestamp, then random bits. Message ids in time
 * order keep the indexes that hold them appending instead of writing all over. The random part
 * comes from `randomUUID` (served from a cached pool of random bytes, unlike `randomBytes`):
 * its variant bits are already those of v7, and its version digit is replaced.
 */
export function newTimeOrderedUuid(now = Date.now()): string {
  const time = now.toString(16).padStart(12, '0');
  return `${time.slice(0, 8)}-${time.slice(8)}-7${randomUUID().slice(15)}`;
}
