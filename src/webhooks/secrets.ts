import { randomBytes } from 'node:crypto';
import type { PreviousSecret } from './tables';

/** A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes. */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/**
 * Replaced secrets kept signing at most: rotating more often within SECRET_ROTATION_OVERLAP ends
 * the oldest early (every one is a signature on every call).
 */
export const MAX_PREVIOUS_SECRETS = 10;

/** The secrets still signing after `replaced` is rotated out at `now`: it first, then those not yet expired. */
export function afterRotation(replaced: string, previous: readonly PreviousSecret[], now: number, overlapMs: number): PreviousSecret[] {
  const stillSigning = previous.filter((entry) => Date.parse(entry.expiresAt) > now);
  return [{ secret: replaced, expiresAt: new Date(now + overlapMs).toISOString() }, ...stillSigning].slice(0, MAX_PREVIOUS_SECRETS);
}
