import { lookup, type LookupAddress, type LookupOptions } from 'node:dns';
import type { IncomingHttpHeaders } from 'node:http';
import { isIP } from 'node:net';
import { Agent, type Dispatcher } from 'undici';
import { isForbiddenAddress } from '../net/addresses';

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
/** Resolves a host name to all its addresses, as `dns.lookup` with `all: true`. */
export type Resolve = (
  hostname: string,
  options: LookupOptions & { all: true },
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/**
 * A DNS lookup that refuses loopback, private and reserved addresses: the check runs on the
 * address actually connected to, so a name that changes its answer (DNS rebinding) gets nowhere.
 */
const guardedLookup = (resolve: Resolve) => (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
  resolve(hostname, { ...options, all: true }, (error, addresses) => {
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
};

/** Where a URL's calls go, parsed once: undici's dispatch takes an origin and a path. */
interface Target {
  origin: string;
  path: string;
  /** Why the URL's literal address may not be called, if it may not. */
  forbidden?: string;
}

const TARGET_CACHE_LIMIT = 10_000;

/**
 * Sends webhook calls: pooled keep-alive connections, a timeout, no redirects, SSRF checks.
 * Calls go through undici's dispatch API: `request` wraps each answer in a stream and the call
 * in an abort signal, which cost a third of the sender's CPU, for an answer read at most 4 KB
 * deep.
 */
export class Sender {
  private readonly agent: Agent;
  /**
   * The calls in flight and when each is given up, in the order they started (one timeout for
   * all, so also in deadline order). undici's own timeouts restart with each chunk a receiver
   * reads or sends; this deadline bounds the whole call. One timer sweeps them all: a timer per
   * call cost more than the rest of sending did.
   */
  private readonly deadlines = new Map<Call, number>();
  private sweeper: NodeJS.Timeout | undefined;
  private readonly targets = new Map<string, Target>();

  constructor(
    private readonly options: {
      timeoutMs: number;
      allowPrivateTargets: boolean;
      userAgent: string;
      /** How host names are resolved: `dns.lookup` unless given (a test answers as a rebinding DNS would). */
      resolve?: Resolve;
    },
  ) {
    this.agent = new Agent({
      // No cap of its own on connections per origin: the worker bounds the calls in flight, per
      // URL and in all. A cap here would queue a healthy URL's calls behind hanging ones to other
      // URLs of the same host, their deadlines running out in the queue.
      connections: null,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: options.allowPrivateTargets ? {} : { lookup: guardedLookup(options.resolve ?? (lookup as Resolve)) as never },
    });
  }

  /**
   * Makes the call. `onLeft`, if given, is called once: when the request is being written to its
   * connection (a new one is connected by then), or when the call ends without that.
   */
  send(url: string, body: string, headers: Record<string, string>, onLeft?: () => void): Promise<SendResult> {
    const target = this.targetOf(url);
    if (target.forbidden) {
      onLeft?.();
      return Promise.resolve({ ok: false, permanent: true, durationMs: 0, error: target.forbidden });
    }
    return new Promise((resolve) => {
      const call = new Call(this.options.timeoutMs, resolve, (done) => this.deadlines.delete(done), onLeft);
      this.deadlines.set(call, call.started + this.options.timeoutMs);
      this.sweeper ??= setInterval(() => this.sweep(), DEADLINE_SWEEP_MS);
      try {
        this.agent.dispatch(
          {
            origin: target.origin,
            path: target.path,
            method: 'POST',
            headers: { 'content-type': 'application/json', 'user-agent': this.options.userAgent, ...headers },
            body,
          },
          call,
        );
      } catch (error) {
        call.onResponseError(undefined, error as Error);
      }
    });
  }

  private targetOf(url: string): Target {
    let target = this.targets.get(url);
    if (!target) {
      const parsed = new URL(url);
      target = { origin: parsed.origin, path: `${parsed.pathname}${parsed.search}` };
      const host = parsed.hostname.replace(/^\[|\]$/g, '');
      // A literal address is connected to without a lookup, so it is checked here.
      if (!this.options.allowPrivateTargets && isIP(host) && isForbiddenAddress(host)) {
        target.forbidden = `${host} is a loopback, private or reserved address; not sent`;
      }
      if (this.targets.size >= TARGET_CACHE_LIMIT) this.targets.clear();
      this.targets.set(url, target);
    }
    return target;
  }

  private sweep(): void {
    const now = performance.now();
    for (const [call, deadline] of this.deadlines) {
      if (deadline > now) return;
      call.expire();
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

/**
 * One call, as undici's handler: keeps the status, `Retry-After` and the answer's first 4 KB,
 * and settles once, with the answer, an error or the deadline, whichever comes first.
 */
class Call implements Dispatcher.DispatchHandler {
  readonly started = performance.now();
  private controller: Dispatcher.DispatchController | undefined;
  private settled = false;
  private statusCode = 0;
  private retryAfter: string | undefined;
  private readonly chunks: Buffer[] = [];
  private length = 0;

  constructor(
    private readonly timeoutMs: number,
    private readonly resolve: (result: SendResult) => void,
    private readonly forget: (call: Call) => void,
    private onLeft: (() => void) | undefined,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // Given up while it waited for a connection: it is not sent.
    if (this.settled) return controller.abort(new Error('given up'));
    this.controller = controller;
    this.left();
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.statusCode = statusCode;
    const retryAfter = headers['retry-after'];
    this.retryAfter = Array.isArray(retryAfter) ? retryAfter[0] : retryAfter;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.settled) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
    if (this.length >= RESPONSE_BODY_LIMIT) {
      this.answered();
      controller.abort(new Error('the rest of the answer is not needed'));
    }
  }

  onResponseEnd(): void {
    this.answered();
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    this.settle({ ok: false, durationMs: this.elapsed(), error: describe(error, this.timeoutMs) });
  }

  /** The deadline passed: the call ends now, and is aborted once undici lets it be (at once, if it is under way). */
  expire(): void {
    const error = `no answer within ${this.timeoutMs} ms`;
    this.settle({ ok: false, durationMs: this.elapsed(), error });
    this.controller?.abort(new Error(error));
  }

  private answered(): void {
    const ok = this.statusCode >= 200 && this.statusCode < 300;
    this.settle({
      ok,
      httpStatus: this.statusCode,
      durationMs: this.elapsed(),
      // Postgres text cannot hold NUL: one in the answer would make its attempt (and its batch) unstorable.
      responseBody:
        this.length === 0 ? '' : Buffer.concat(this.chunks).subarray(0, RESPONSE_BODY_LIMIT).toString('utf8').replaceAll('\u0000', '\uFFFD'),
      retryAfter: this.retryAfter,
      error: ok ? undefined : `the receiver answered ${this.statusCode}`,
    });
  }

  private settle(result: SendResult): void {
    if (this.settled) return;
    this.settled = true;
    this.left();
    this.forget(this);
    this.resolve(result);
  }

  private left(): void {
    const onLeft = this.onLeft;
    this.onLeft = undefined;
    onLeft?.();
  }

  private elapsed(): number {
    return Math.round(performance.now() - this.started);
  }
}

function describe(error: unknown, timeoutMs: number): string {
  const err = error as Error & { code?: string; cause?: Error & { code?: string } };
  if (err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') return `no answer within ${timeoutMs} ms`;
  const cause = err.cause ?? err;
  return cause.code ? `${cause.code}: ${cause.message}` : cause.message;
}
