import { randomBytes } from 'node:crypto';
import type { PreviousSecret } from './tables';

/** A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes. */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/**
 * Replaced secrets kept at most. Each signs for SECRET_ROTATION_OVERLAP after its replacement, then
 * is kept so that read-only profiles see it hidden in the log (messages and answers made while it
 * signed), until the log's retention has passed. Rotating more often than this many times in that
 * time ends the oldest's signing or hiding early.
 */
export const MAX_PREVIOUS_SECRETS = 10;

/**
 * The replaced secrets after `replaced` is rotated out at `now`: it first (signing for
 * `overlapMs`), then those kept before it whose signing ended less than `keptForMs` ago.
 */
export function afterRotation(
  replaced: string,
  previous: readonly PreviousSecret[],
  now: number,
  { overlapMs, keptForMs }: { overlapMs: number; keptForMs: number },
): PreviousSecret[] {
  const kept = previous.filter((entry) => Date.parse(entry.expiresAt) + keptForMs > now);
  return [{ secret: replaced, expiresAt: new Date(now + overlapMs).toISOString() }, ...kept].slice(0, MAX_PREVIOUS_SECRETS);
}
