import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { isForbiddenAddress } from '../net/addresses';

export const MAX_URL_LENGTH = 2048;
const LOOKUP_TIMEOUT_MS = 2000;

export interface TargetPolicy {
  allowPrivateTargets: boolean;
}

/** Parses a target URL into its canonical form, or says why it cannot be one. */
export function parseTargetUrl(text: string, policy: TargetPolicy): { url: URL } | { problem: string } {
  if (text.length > MAX_URL_LENGTH) return { problem: `is longer than ${MAX_URL_LENGTH} characters` };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { problem: `'${text}' is not an absolute URL` };
  }
  const allowed = policy.allowPrivateTargets ? ['https:', 'http:'] : ['https:'];
  if (!allowed.includes(url.protocol)) {
    return { problem: `'${text}' must use ${policy.allowPrivateTargets ? 'http or https' : 'https'}` };
  }
  if (!url.hostname) return { problem: `'${text}' has no host` };
  // What is stored (and indexed) is the canonical form, percent-encoded: up to 9 times as long.
  if (url.href.length > MAX_URL_LENGTH) {
    return { problem: `is longer than ${MAX_URL_LENGTH} characters once percent-encoded (${url.href.length})` };
  }
  // Not sent (no credentials go with a call), and shown wherever the URL is: refused, and not echoed.
  if (url.username || url.password) return { problem: 'must not contain a user name or password (user:password@host)' };
  return { url };
}

async function resolveWithin(hostname: string, ms: number): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string[]>((resolve) => {
    timer = setTimeout(() => resolve([]), ms);
  });
  const resolved = lookup(hostname, { all: true, verbatim: true }).then(
    (addresses) => addresses.map((entry) => entry.address),
    () => [] as string[], // a name that does not resolve yet is accepted; delivery checks again
  );
  try {
    return await Promise.race([resolved, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Refuses a target on a loopback, private, link-local or reserved address: a literal one,
 * `localhost`, or a name that resolves to one. The address actually connected to is checked
 * again at every delivery, so DNS rebinding does not get past this.
 */
export async function findForbiddenTarget(url: URL, policy: TargetPolicy): Promise<string | undefined> {
  if (policy.allowPrivateTargets) return undefined;
  const host = url.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return `'${url.href}' points at localhost`;
  if (isIP(host)) {
    return isForbiddenAddress(host) ? `'${url.href}' points at ${host}, a loopback, private or reserved address` : undefined;
  }
  const addresses = await resolveWithin(host, LOOKUP_TIMEOUT_MS);
  // What the name resolved to is not said: the answer would let a caller map internal DNS.
  return addresses.some(isForbiddenAddress) ? `'${url.href}' resolves to a loopback, private or reserved address` : undefined;
}
