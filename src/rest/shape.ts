import { formatApiDate } from '../dates';

const pascal = (key: string) => key.charAt(0).toUpperCase() + key.slice(1);
const camel = (key: string) => key.charAt(0).toLowerCase() + key.slice(1);

/** A domain object in Caspio's REST spelling: PascalCase keys, API dates, undefined fields left out. */
export function toRestShape(value: object): Record<string, unknown> {
  const shaped: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (field === undefined) continue;
    shaped[pascal(key)] = field instanceof Date ? formatApiDate(field) : field;
  }
  return shaped;
}

/** A REST request body in the services' spelling (camelCase keys); anything not an object is passed on for the service to refuse. */
export function fromRestShape(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  return Object.fromEntries(Object.entries(body).map(([key, field]) => [camel(key), field]));
}

/** `outgoingUrls.1` → `OutgoingUrls[1]` */
export const restFieldName = (path: string) => pascal(path).replace(/\.(\d+)/g, '[$1]').replace(/\.(\w)/g, (_, c: string) => `.${c.toUpperCase()}`);
