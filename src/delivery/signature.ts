import { createHmac } from 'node:crypto';

/** The key bytes of a Standard Webhooks secret (`whsec_` + base64). Decode once, sign many. */
export const secretKey = (secret: string) => Buffer.from(secret.replace(/^whsec_/, ''), 'base64');

/**
 * The `webhook-signature` header of Standard Webhooks: `v1,<base64 HMAC-SHA256 of
 * "{id}.{timestamp}.{body}">`, one per key, space-separated (more than one during secret rotation).
 */
export function signMessage(keys: readonly Buffer[], messageId: string, timestamp: number, body: string): string {
  return keys
    .map((key) => `v1,${createHmac('sha256', key).update(`${messageId}.${timestamp}.${body}`).digest('base64')}`)
    .join(' ');
}
