import { createServer, type AddressInfo } from 'node:net';
import type { PGlite } from '@electric-sql/pglite';
import type { PGLiteSocketHandler, PGLiteSocketHandlerOptions } from '@electric-sql/pglite-socket';

export interface EmbeddedServer {
  /** `host:port` the database is served on. */
  address: string;
  /** Closes the connections (rolling back their open transactions) and the port. */
  stop(): Promise<void>;
}

const MAX_CONNECTIONS = 10;

/**
 * Serves the embedded database to other programs (psql, the user's application) on a loopback
 * port: pglite-socket's handlers read the wire protocol, a SessionQueue runs their messages.
 */
export async function serveEmbedded(pglite: PGlite, port: number): Promise<EmbeddedServer> {
  const { PGLiteSocketHandler } = await import('@electric-sql/pglite-socket');
  // The handlers call only enqueue, clearQueueForHandler and clearTransactionIfNeeded.
  const queryQueue = new SessionQueue(pglite) as unknown as PGLiteSocketHandlerOptions['queryQueue'];
  const handlers = new Set<PGLiteSocketHandler>();
  const server = createServer((socket) => {
    if (handlers.size >= MAX_CONNECTIONS) {
      socket.end('Too many connections\n');
      return;
    }
    const handler = new PGLiteSocketHandler({ queryQueue, closeOnDetach: true });
    handlers.add(handler);
    // A handler that fails (a reset connection) detaches itself and says 'error', not 'close'.
    for (const event of ['close', 'error']) handler.addEventListener(event, () => handlers.delete(handler));
    void handler.attach(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.on('error', reject); // stays: a failed accept later must not end the process
    server.listen(port, '127.0.0.1', resolve);
  });
  const { address, port: served } = server.address() as AddressInfo;
  let stopped: Promise<void> | undefined;
  return {
    address: `${address}:${served}`,
    stop: () =>
      (stopped ??= (async () => {
        const closed = new Promise((resolve) => server.close(resolve));
        await Promise.all([...handlers].map((handler) => handler.detach(true)));
        await closed;
      })()),
  };
}

interface QueuedMessage {
  handlerId: number;
  /** The ROLLBACK for a client gone: it stays when the client is cleared again (a reset socket says both 'error' and 'close'). */
  cleanup?: boolean;
  message: Uint8Array;
  onData: (data: Uint8Array) => void;
  resolve: (bytes: number) => void;
  reject: (error: Error) => void;
}

/** ReadyForQuery with its transaction status: `Z`, length 5, then `I` (idle), `T` or `E` (in a transaction block). */
const READY_FOR_QUERY = [0x5a, 0, 0, 0, 5];
const IDLE = 0x49;
const endsIdle = (tail: Uint8Array) =>
  tail.length === READY_FOR_QUERY.length + 1 && READY_FOR_QUERY.every((byte, i) => tail[i] === byte) && tail[READY_FOR_QUERY.length] === IDLE;

/**
 * PGlite is a single Postgres session, shared by the gateway and every outside client. The queue
 * pglite-socket comes with runs its clients' messages one at a time and keeps the others waiting
 * while one is in a transaction block, but the gateway's own queries reach PGlite around it: one
 * ran inside an outside client's open transaction (whose ROLLBACK then found none: the gateway's
 * COMMIT had ended it), and an outside message could run inside a gateway transaction, or
 * between the messages of another client's extended query (Parse, Bind, Execute, Sync), using
 * its unnamed statement.
 *
 * Here a client holds the whole session from its first message until the session is idle again:
 * its last answer ended in ReadyForQuery `I`, so no transaction block is open and no extended
 * query unfinished. Held means PGlite's transaction mutex, which the gateway's query(), exec()
 * and transaction() take too: the gateway waits meanwhile, and a client's message waits for a
 * gateway transaction to end. Only the holder's messages run; a holder that goes away (also
 * while its message waits or runs) is rolled back, which releases the session.
 */
class SessionQueue {
  private waiting: QueuedMessage[] = [];
  /** The client whose messages alone run: its message runs, or it holds the session. */
  private holder: number | undefined;
  private release: (() => void) | undefined;
  private idle = true;
  private draining = false;

  constructor(private readonly pglite: PGlite) {}

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void, cleanup = false): Promise<number> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ handlerId, message, onData, resolve, reject, cleanup });
      void this.drain();
    });
  }

  clearQueueForHandler(handlerId: number): void {
    const cleared = (queued: QueuedMessage) => queued.handlerId === handlerId && !queued.cleanup;
    for (const queued of this.waiting) if (cleared(queued)) queued.reject(new Error('Handler disconnected'));
    this.waiting = this.waiting.filter((queued) => !cleared(queued));
  }

  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    const pending = this.waiting.some((queued) => queued.handlerId === handlerId && queued.cleanup);
    if (this.holder === handlerId && !pending) await this.enqueue(handlerId, ROLLBACK, () => {}, true);
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    for (;;) {
      const index = this.waiting.findIndex((queued) => this.holder === undefined || queued.handlerId === this.holder);
      if (index < 0) break; // the holder's next message is not here yet: enqueue drains again
      const [queued] = this.waiting.splice(index, 1);
      await this.run(queued!).then(queued!.resolve, queued!.reject);
    }
    this.draining = false;
  }

  private async run({ handlerId, message, onData }: QueuedMessage): Promise<number> {
    this.holder = handlerId;
    let bytes = 0;
    let tail = new Uint8Array(0);
    try {
      this.release ??= await holdTransactionMutex(this.pglite);
      await this.pglite.runExclusive(() =>
        this.pglite.execProtocolRawStream(message, {
          onRawData: (data) => {
            bytes += data.length;
            const joined = new Uint8Array(tail.length + data.length);
            joined.set(tail);
            joined.set(data, tail.length);
            tail = joined.slice(-(READY_FOR_QUERY.length + 1));
            onData(data);
          },
        }),
      );
      return bytes;
    } finally {
      // From what was answered, also when the message failed after answering (a BEGIN answered,
      // then an error): no answer (a Flush, a Terminate, what follows an error until Sync) leaves
      // the state as it was.
      if (tail.length > 0) this.idle = endsIdle(tail);
      if (this.idle) {
        this.holder = undefined;
        this.release?.();
        this.release = undefined;
      }
    }
  }
}

/**
 * Takes PGlite's transaction mutex and keeps it until the function returned is called.
 * (_runExclusiveTransaction is public in PGlite's types, though not in its documentation.)
 */
function holdTransactionMutex(pglite: PGlite): Promise<() => void> {
  return new Promise((held) => {
    void pglite._runExclusiveTransaction(() => new Promise<void>((release) => held(() => release())));
  });
}

function simpleQuery(text: string): Buffer {
  const body = Buffer.from(`${text}\0`);
  const header = Buffer.alloc(5);
  header.write('Q');
  header.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([header, body]);
}

/**
 * Ends whatever a departed client left open. A ROLLBACK after an error in an extended query is
 * ignored until the Sync, so a second one follows it; a Sync first would commit an unfinished
 * extended query's implicit transaction instead of rolling it back.
 */
const ROLLBACK = Buffer.concat([simpleQuery('ROLLBACK'), Buffer.from([0x53, 0, 0, 0, 4]), simpleQuery('ROLLBACK')]);
