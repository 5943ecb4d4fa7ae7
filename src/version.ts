import { readFileSync } from 'node:fs';

const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { name: string; version: string };

/** `user-agent` of every webhook call: `<product>/<version>`. */
export const USER_AGENT = `${manifest.name}/${manifest.version}`;
