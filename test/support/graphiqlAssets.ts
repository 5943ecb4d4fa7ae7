import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';

const run = promisify(execFile);

// yoga's GraphiQL page loads its script and styles from unpkg.com, which this machine cannot
// reach (only the npm registry). The same files come from the package on npm and are served
// to the browser in unpkg's place. (yoga 5.24 names 4.5.1; the registry here has 4.5.0.)
const PACKAGE = '@graphql-yoga/graphiql@4.5.0';
const directory = join(tmpdir(), 'webhook-gateway-graphiql-4.5.0');

async function unpackedPackage(): Promise<string> {
  const dist = join(directory, 'package', 'dist');
  if (!existsSync(join(dist, 'yoga-graphiql.umd.js'))) {
    await mkdir(directory, { recursive: true });
    const { stdout } = await run('npm', ['pack', PACKAGE, '--silent', '--pack-destination', directory]);
    await run('tar', ['xzf', join(directory, stdout.trim().split('\n').at(-1)!), '-C', directory]);
  }
  return dist;
}

/** Serves GraphiQL's unpkg files to `page` from the npm package. */
export async function serveGraphiQLAssets(page: Page): Promise<void> {
  const dist = await unpackedPackage();
  await page.route('https://unpkg.com/**', async (route) => {
    const file = new URL(route.request().url()).pathname.replace(/^\/@graphql-yoga\/graphiql@[^/]+\/dist\//, '');
    const body = await readFile(join(dist, file)).catch(() => undefined);
    if (!body) return route.fulfill({ status: 404 });
    return route.fulfill({ body, contentType: file.endsWith('.css') ? 'text/css' : 'application/javascript' });
  });
  await page.route('https://raw.githubusercontent.com/**', (route) => route.fulfill({ status: 404 })); // the favicon
}
