import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { isForbiddenAddress } from '../src/net/addresses';
import { findForbiddenTarget, parseTargetUrl } from '../src/webhooks/targetUrls';

describe('forbidden target addresses', () => {
  it.each([
    '127.0.0.1',
    '127.255.0.1',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.0.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '255.255.255.255',
    '::1',
    '::',
    'fe80::1',
    'fc00::1',
    'fd12:3456::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '::7f00:1',
    '::ffff:0:7f00:1',
    '64:ff9b::a00:1',
    'not-an-ip',
  ])('refuses %s', (address) => {
    expect(isForbiddenAddress(address)).toBe(true);
  });

  it.each(['93.184.215.14', '8.8.8.8', '172.32.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])('allows %s', (address) => {
    expect(isForbiddenAddress(address)).toBe(false);
  });
});

describe('target URLs at save time', () => {
  const strict = { allowPrivateTargets: false };
  const relaxed = { allowPrivateTargets: true };

  it('canonicalises URLs so that spellings of one URL compare equal', () => {
    const a = parseTargetUrl('https://Hooks.Example.com:443/a', strict);
    const b = parseTargetUrl('https://hooks.example.com/a', strict);
    expect('url' in a && 'url' in b && a.url.href === b.url.href).toBe(true);
  });

  it('requires https unless private targets are allowed', () => {
    expect(parseTargetUrl('http://hooks.example.com/', strict)).toHaveProperty('problem');
    expect(parseTargetUrl('http://hooks.example.com/', relaxed)).toHaveProperty('url');
  });

  it('refuses literal private addresses and localhost, unless allowed', async () => {
    expect(await findForbiddenTarget(new URL('https://10.0.0.1/'), strict)).toMatch(/10\.0\.0\.1/);
    expect(await findForbiddenTarget(new URL('https://api.localhost/'), strict)).toMatch(/localhost/);
    expect(await findForbiddenTarget(new URL('https://[::1]:8443/'), strict)).toMatch(/::1/);
    expect(await findForbiddenTarget(new URL('http://127.0.0.1:9000/'), relaxed)).toBeUndefined();
  });

  it('refuses a name that resolves to a loopback or private address', async () => {
    // The machine's own host name resolves (through /etc/hosts) to a loopback or private address.
    const [address] = await lookup(hostname(), { all: true });
    expect(isForbiddenAddress(address!.address)).toBe(true);
    const refusal = await findForbiddenTarget(new URL(`https://${hostname()}/hook`), strict);
    expect(refusal).toMatch(/resolves to a loopback, private or reserved address/);
    // What the name resolved to is not given away.
    expect(refusal).not.toContain(address!.address);
  });

  it('accepts a name that does not resolve yet', async () => {
    expect(await findForbiddenTarget(new URL('https://not-registered-yet.invalid/hook'), strict)).toBeUndefined();
  });
});
