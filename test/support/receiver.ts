import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedCall {
  method: string;
  path: string;
  at: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  delayMs?: number;
  /** The answer's body; `status <code>` when not given. */
  body?: string;
  /** Sends the head, then one byte of body this often, never ending (a receiver that stalls mid-answer). */
  dripMs?: number;
}

/** A real HTTP server that records every call and answers as told, per path. */
export class Receiver {
  readonly calls: ReceivedCall[] = [];
  private readonly server: Server;
  private readonly scripts = new Map<string, Reply[]>();
  private readonly defaults = new Map<string, Reply>();
  url = '';

  constructor() {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const path = request.url ?? '/';
        this.calls.push({ method: request.method ?? '', path, at: Date.now(), headers: request.headers, body: Buffer.concat(chunks).toString() });
        const reply = this.scripts.get(path)?.shift() ?? this.defaults.get(path) ?? { status: 200 };
        const answer = () => {
          if (response.destroyed) return;
          response.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers });
          if (reply.dripMs) {
            response.flushHeaders();
            const drip = setInterval(() => response.write('.'), reply.dripMs);
            response.on('close', () => clearInterval(drip));
            return;
          }
          response.end(reply.body ?? `status ${reply.status}`);
        };
        if (reply.delayMs) setTimeout(answer, reply.delayMs);
        else answer();
      });
    });
    this.server.keepAliveTimeout = 60_000;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** The next calls to `path` get these replies, in order; after them, the default. */
  script(path: string, ...replies: Reply[]): void {
    this.scripts.set(path, replies);
  }

  /** Every call to `path` gets this reply once any script is used up. */
  answer(path: string, reply: Reply): void {
    this.defaults.set(path, reply);
  }

  callsTo(path: string): ReceivedCall[] {
    return this.calls.filter((call) => call.path === path);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The most calls seen in any window of `windowMs` (a sliding window over the arrival times). */
export function maxInWindow(times: number[], windowMs = 1000): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let start = 0, end = 0; end < sorted.length; end++) {
    while (sorted[end]! - sorted[start]! >= windowMs) start++;
    most = Math.max(most, end - start + 1);
  }
  return most;
}
