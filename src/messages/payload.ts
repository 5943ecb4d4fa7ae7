import JSON5 from 'json5';

export const HOOK_PLACEHOLDERS = [
  'secret',
  'webhookId',
  'messageId',
  'eventId',
  'callId',
  'accountId',
  'eventDate',
  'eventType',
  'objectName',
] as const;
export type HookPlaceholder = (typeof HOOK_PLACEHOLDERS)[number];
export type HookValues = Record<HookPlaceholder, string>;

export const MAX_TEMPLATE_LENGTH = 64 * 1024;
/**
 * Objects and arrays nested in one another, the outermost counting as one (templates seen in
 * practice use three or four). Rendering, and the JSON.stringify after it, recurse once per
 * level: a few thousand exhaust the stack, while the parser takes any depth.
 */
export const MAX_TEMPLATE_DEPTH = 32;
/** The deepest stored template the dispatcher renders (one saved before MAX_TEMPLATE_DEPTH may be deeper); well within the stack. */
export const RENDERABLE_TEMPLATE_DEPTH = 1000;

const PLACEHOLDER = /\[@(out-hook|field):([^\]]+)\]/g;
const WHOLE_PLACEHOLDER = /^\[@(out-hook|field):([^\]]+)\]$/;

export interface ParsedTemplate {
  structure: unknown;
  /** Columns named by `[@field:…]` placeholders. */
  fields: string[];
}

/** Whether objects and arrays nest more than `limit` levels deep; looks no deeper than that. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (limit === 0) return true;
  return Object.values(value).some((item) => nestsDeeperThan(item, limit - 1));
}

function collectPlaceholders(value: unknown, found: { kind: string; name: string }[]): void {
  if (typeof value === 'string') {
    for (const match of value.matchAll(PLACEHOLDER)) found.push({ kind: match[1]!, name: match[2]! });
  } else if (Array.isArray(value)) {
    for (const item of value) collectPlaceholders(item, found);
  } else if (value && typeof value === 'object') {
    for (const item of Object.values(value)) collectPlaceholders(item, found);
  }
}

/**
 * Parses a CustomPayloadTemplate: JSON written with single (or double) quotes whose string
 * values may hold `[@out-hook:name]` and `[@field:Column]` placeholders. Throws a message
 * saying what is wrong.
 */
export function parsePayloadTemplate(text: string, { maxDepth = MAX_TEMPLATE_DEPTH } = {}): ParsedTemplate {
  if (text.length > MAX_TEMPLATE_LENGTH) throw new Error(`is longer than ${MAX_TEMPLATE_LENGTH} characters`);
  let structure: unknown;
  try {
    structure = JSON5.parse(text);
  } catch (error) {
    throw new Error(`is not valid JSON: ${(error as Error).message.replace(/^JSON5: /, '')}`);
  }
  if (typeof structure !== 'object' || structure === null) throw new Error('must be a JSON object or array');
  if (nestsDeeperThan(structure, maxDepth)) {
    throw new Error(`nests objects and arrays more than ${maxDepth} levels deep`);
  }
  const found: { kind: string; name: string }[] = [];
  collectPlaceholders(structure, found);
  const unknownHook = found.find(
    (placeholder) => placeholder.kind === 'out-hook' && !(HOOK_PLACEHOLDERS as readonly string[]).includes(placeholder.name),
  );
  if (unknownHook) {
    throw new Error(`has an unknown placeholder [@out-hook:${unknownHook.name}] (known: ${HOOK_PLACEHOLDERS.join(', ')})`);
  }
  const fields = [...new Set(found.filter((placeholder) => placeholder.kind === 'field').map((placeholder) => placeholder.name))];
  return { structure, fields };
}

function placeholderValue(kind: string, name: string, hook: HookValues, row: Record<string, unknown>): unknown {
  if (kind === 'out-hook') return hook[name as HookPlaceholder];
  // A column missing from the row (dropped or renamed since the event was saved) renders as null.
  return Object.hasOwn(row, name) ? row[name] : null;
}

function stringOf(value: unknown): string {
  if (value === null || value === undefined) return '';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

/**
 * Fills a parsed template. Values go into the parsed structure, never into JSON text, so a value
 * with quotes or brackets stays one string. A string that is exactly one placeholder takes the
 * value with its JSON type (a number stays a number); placeholders inside longer strings are
 * replaced by the value's text.
 */
export function renderTemplate(structure: unknown, hook: HookValues, row: Record<string, unknown>): unknown {
  if (typeof structure === 'string') {
    const whole = WHOLE_PLACEHOLDER.exec(structure);
    if (whole) return placeholderValue(whole[1]!, whole[2]!, hook, row) ?? null;
    return structure.replace(PLACEHOLDER, (_, kind: string, name: string) => stringOf(placeholderValue(kind, name, hook, row)));
  }
  if (Array.isArray(structure)) return structure.map((item) => renderTemplate(item, hook, row));
  if (structure && typeof structure === 'object') {
    return Object.fromEntries(Object.entries(structure).map(([key, value]) => [key, renderTemplate(value, hook, row)]));
  }
  return structure;
}

/** The default message body (CONTRACT §6), keys in the documented order. */
export function defaultBody(hook: HookValues, data: Record<string, unknown>): Record<string, unknown> {
  return {
    eventId: hook.eventId,
    messageId: hook.messageId,
    webhookId: hook.webhookId,
    accountId: hook.accountId,
    secret: hook.secret,
    eventDate: hook.eventDate,
    eventType: hook.eventType,
    objectName: hook.objectName,
    data: [data],
  };
}

/** The row cut to the chosen columns, in their order; all columns when none are chosen. */
export function pickFields(row: Record<string, unknown>, fields: readonly string[]): Record<string, unknown> {
  if (fields.length === 0) return row;
  return Object.fromEntries(fields.filter((field) => Object.hasOwn(row, field)).map((field) => [field, row[field]]));
}
