import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sender, type Resolve } from '../src/delivery/sender';

/** A receiver whose answer each path scripts; it counts the requests each path got. */
let server: Server;
let base: string;
const received = new Map<string, number>();
const routes: Record<string, (request: IncomingMessage, response: ServerResponse) => void> = {
  '/redirect': (_request, response) => response.writeHead(302, { location: '/target' }).end(),
  '/target': (_request, response) => response.writeHead(200).end('reached'),
  '/busy': (_request, response) => response.writeHead(503, { 'retry-after': '7' }).end('later'),
  // An answer that never ends: only its first 4 KB is read, and the call ends there.
  '/endless': (_request, response) => {
    response.writeHead(200);
    const chunk = 'x'.repeat(1024);
    const write = () => {
      while (!response.destroyed && response.write(chunk));
      if (!response.destroyed) response.once('drain', write);
    };
    write();
  },
  '/hang': () => {},
  '/pooled': (request, response) => response.writeHead(200).end(String(request.socket.remotePort)),
};

beforeAll(async () => {
  server = createServer((request, response) => {
    const path = request.url!.split('?')[0]!;
    received.set(path, (received.get(path) ?? 0) + 1);
    request.resume();
    request.on('end', () => routes[path]!(request, response));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const newSender = (timeoutMs = 5000, allowPrivateTargets = true) => new Sender({ timeoutMs, allowPrivateTargets, userAgent: 'test' });

describe('sending a call', () => {
  it('does not follow a redirect', async () => {
    const sender = newSender();
    const result = await sender.send(`${base}/redirect`, '{}', {});
    await sender.close();
    expect(result).toMatchObject({ ok: false, httpStatus: 302, error: 'the receiver answered 302' });
    expect(received.get('/target')).toBeUndefined();
  });

  it('keeps its connections open for the next calls (a pool, not a connection per call)', async () => {
    const sender = newSender();
    // undici takes a connection back a moment after its answer ended: the next call goes after that.
    const settle = () => new Promise((resolve) => setTimeout(resolve, 10));
    const portOf = async () => (await sender.send(`${base}/pooled`, '{}', {})).responseBody!;
    const one: string[] = [];
    for (let call = 0; call < 3; call++) {
      one.push(await portOf());
      await settle();
    }
    const four = await Promise.all(Array.from({ length: 4 }, portOf));
    await settle();
    const fourMore = await Promise.all(Array.from({ length: 4 }, portOf));
    await sender.close();
    // One after another: one connection. Four at once open more, and the next four find them open.
    expect(new Set(one).size).toBe(1);
    const seen = new Set([...one, ...four]);
    expect(fourMore.every((port) => seen.has(port))).toBe(true);
    expect(seen.size).toBeLessThanOrEqual(5);
  });

  it('checks the address each connection is made to, so a name that rebinds to this machine gets nowhere', async () => {
    // A rebinding DNS: a public address first (as when the URL was saved and checked), then this machine.
    let lookups = 0;
    const rebinding: Resolve = (_hostname, _options, callback) => {
      lookups++;
      callback(null, [{ address: lookups === 1 ? '1.1.1.1' : '127.0.0.1', family: 4 }]);
    };
    const url = `http://rebinding.example:${new URL(base).port}/target`;
    const calledBefore = received.get('/target') ?? 0;
    const results = [];
    for (let call = 0; call < 2; call++) {
      // A sender each, so that the second call needs a connection (and a lookup) of its own.
      const sender = new Sender({ timeoutMs: 500, allowPrivateTargets: false, userAgent: 'test', resolve: rebinding });
      results.push(await sender.send(url, '{}', {}));
      await sender.close();
    }
    expect(lookups).toBe(2); // one per connection: none done apart to check, then another to connect
    expect(results[0]!.ok).toBe(false); // 1.1.1.1 at the receiver's port does not answer from here
    expect(results[1]).toMatchObject({ ok: false, error: expect.stringMatching(/rebinding.example resolves to a forbidden \(loopback, private or reserved\) address/) });
    expect(received.get('/target') ?? 0).toBe(calledBefore);
  });

  it('says when the request left: once it is written, before any answer; once, at the end, if it never went', async () => {
    const sender = newSender(500);
    let left = 0;
    let arrivedWhenLeft: number | undefined;
    const hanging = sender.send(`${base}/hang?left=1`, '{}', {}, () => {
      left++;
      arrivedWhenLeft ??= received.get('/hang') ?? 0;
    });
    const before = received.get('/hang') ?? 0;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(left).toBe(1); // the receiver has it and has not answered
    expect(arrivedWhenLeft).toBe(before); // said as it was written, before the receiver read it
    expect(received.get('/hang')).toBe(before + 1);
    expect(await hanging).toMatchObject({ ok: false, error: 'no answer within 500 ms' });
    expect(left).toBe(1);

    let refusedLeft = 0;
    const refused = await sender.send('http://127.0.0.1:1/', '{}', {}, () => refusedLeft++);
    expect(refused).toMatchObject({ ok: false });
    expect(refusedLeft).toBe(1);
    await sender.close();
  });

  it("keeps the status, Retry-After and the answer's body", async () => {
    const sender = newSender();
    const result = await sender.send(`${base}/busy?attempt=1`, '{}', {});
    await sender.close();
    expect(result).toMatchObject({ ok: false, httpStatus: 503, retryAfter: '7', responseBody: 'later' });
  });

  it('reads an answer 4 KB deep and no further', async () => {
    const sender = newSender();
    const result = await sender.send(`${base}/endless`, '{}', {});
    await sender.close();
    expect(result).toMatchObject({ ok: true, httpStatus: 200, responseBody: 'x'.repeat(4096) }); // CONTRACT §7: the first 4 KB
  });

  it('gives up a call without an answer by its deadline', async () => {
    const sender = newSender(300);
    const result = await sender.send(`${base}/hang`, '{}', {});
    await sender.close();
    expect(result).toMatchObject({ ok: false, error: 'no answer within 300 ms' });
    expect(result.durationMs).toBeGreaterThanOrEqual(300);
  });

  it('reports a refused connection', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const sender = newSender();
    const result = await sender.send(`http://127.0.0.1:${port}/`, '{}', {});
    await sender.close();
    expect(result).toMatchObject({ ok: false });
    expect(result.error).toMatch(/^ECONNREFUSED/);
  });

  it('refuses a literal private address at send time, for good', async () => {
    const sender = newSender(5000, false);
    const result = await sender.send(`${base}/target`, '{}', {});
    await sender.close();
    expect(result).toMatchObject({ ok: false, permanent: true, error: '127.0.0.1 is a loopback, private or reserved address; not sent' });
  });
});
