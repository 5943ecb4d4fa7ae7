import { lookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { Agent, request } from 'undici';
import { isForbiddenAddress } from '../net/addresses';

export const MAX_BODY_BYTES = 10 * 1024 * 1024;
export const RESPONSE_BODY_LIMIT = 4096;
/** How often calls past their deadline are looked for: a call is given up at most this late. */
const DEADLINE_SWEEP_MS = 100;

export interface SendResult {
  ok: boolean;
  /** A failure that no retry can fix (the body is too large, the target is forbidden). */
  permanent?: boolean;
  httpStatus?: number;
  durationMs: number;
  error?: string;
  /** The first 4 KB of the response body (NUL characters replaced by U+FFFD). */
  responseBody?: string;
  retryAfter?: string;
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A DNS lookup that refuses loopback, private and reserved addresses: the check runs on the
 * address actually connected to, so a name that changes its answer (DNS rebinding) gets nowhere.
 */
function guardedLookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
  lookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, []);
    const allowed = addresses.filter((entry) => !isForbiddenAddress(entry.address));
    if (allowed.length === 0) {
      const refused = Object.assign(new Error(`${hostname} resolves to a forbidden (loopback, private or reserved) address`), {
        code: 'EFORBIDDENTARGET',
      });
      return callback(refused, []);
    }
    if (options.all) return callback(null, allowed);
    callback(null, allowed[0]!.address, allowed[0]!.family);
  });
}

/** Sends webhook calls: pooled keep-alive connections, a timeout, no redirects, SSRF checks. */
export class Sender {
  private readonly agent: Agent;
  /**
   * The calls in flight and when each is given up, in the order they started (one timeout for
   * all, so also in deadline order). undici's own timeouts restart with each chunk a receiver
   * reads or sends; this deadline bounds the whole call. One timer sweeps them all: a timer per
   * call (AbortSignal.timeout), or even an AbortController per call, cost more than the rest of
   * sending did.
   */
  private readonly deadlines = new Map<CallSignal, number>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: { timeoutMs: number; allowPrivateTargets: boolean; userAgent: string },
  ) {
    this.agent = new Agent({
      connections: 64,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: options.allowPrivateTargets ? {} : { lookup: guardedLookup as never },
    });
  }

  async send(url: string, body: string, headers: Record<string, string>): Promise<SendResult> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    if (Buffer.byteLength(body) > MAX_BODY_BYTES) {
      return { ok: false, permanent: true, durationMs: 0, error: `the body is larger than ${MAX_BODY_BYTES} bytes; not sent` };
    }
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    // A literal address is connected to without a lookup, so it is checked here.
    if (!this.options.allowPrivateTargets && isIP(host) && isForbiddenAddress(host)) {
      return { ok: false, permanent: true, durationMs: 0, error: `${host} is a loopback, private or reserved address; not sent` };
    }
    const deadline = new CallSignal();
    this.deadlines.set(deadline, started + this.options.timeoutMs);
    this.sweeper ??= setInterval(() => this.sweep(), DEADLINE_SWEEP_MS);
    try {
      const response = await request(url, {
        method: 'POST',
        dispatcher: this.agent,
        headers: { 'content-type': 'application/json', 'user-agent': this.options.userAgent, ...headers },
        body,
        signal: deadline,
      });
      const responseBody = EMPTY_STATUSES.has(response.statusCode) ? await emptied(response.body) : await readStart(response.body);
      const ok = response.statusCode >= 200 && response.statusCode < 300;
      const retryAfter = response.headers['retry-after'];
      return {
        ok,
        httpStatus: response.statusCode,
        durationMs: elapsed(),
        responseBody,
        retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
        error: ok ? undefined : `the receiver answered ${response.statusCode}`,
      };
    } catch (error) {
      return { ok: false, durationMs: elapsed(), error: describe(error, this.options.timeoutMs) };
    } finally {
      this.deadlines.delete(deadline);
    }
  }

  private sweep(): void {
    const now = performance.now();
    for (const [call, deadline] of this.deadlines) {
      if (deadline > now) return;
      this.deadlines.delete(call);
      call.abort(new DOMException('the call took too long', 'TimeoutError'));
    }
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    return this.agent.close();
  }
}

/** What undici accepts as an abort signal (an emitter with `aborted` and `reason`), without EventTarget's cost. */
class CallSignal extends EventEmitter {
  aborted = false;
  reason: Error | undefined;

  abort(reason: Error): void {
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}

/** Answers that have no body: it is read to the end (keeping the connection usable), not collected. */
const EMPTY_STATUSES = new Set([204, 205, 304]);

async function emptied(body: { dump(): Promise<void> }): Promise<string> {
  await body.dump();
  return '';
}

async function readStart(body: AsyncIterable<Buffer> & { destroy(): void }): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    length += chunk.length;
    if (length >= RESPONSE_BODY_LIMIT) {
      body.destroy(); // the rest is not needed
      break;
    }
  }
  // Postgres text cannot hold NUL: one in the answer would make its attempt (and its batch) unstorable.
  return Buffer.concat(chunks).subarray(0, RESPONSE_BODY_LIMIT).toString('utf8').replaceAll('\u0000', '\uFFFD');
}

function describe(error: unknown, timeoutMs: number): string {
  const err = error as Error & { code?: string; cause?: Error & { code?: string } };
  if (err.name === 'TimeoutError' || err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') {
    return `no answer within ${timeoutMs} ms`;
  }
  const cause = err.cause ?? err;
  return cause.code ? `${cause.code}: ${cause.message}` : cause.message;
}
