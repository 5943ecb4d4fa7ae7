interface UrlState {
  inFlight: number;
  waiters: { grant(): void; timer: NodeJS.Timeout }[];
  /** When a place to the URL was last taken or given back. */
  movedAt: number;
}

/**
 * Bounds the calls in flight to each URL in this process, so that a slow or hanging receiver
 * cannot take every worker slot. A call over the bound waits for a place, in order, while the
 * URL's calls keep finishing; once none has finished for `stallMs`, the calls waiting and those
 * that come later are refused, and go back to the queue to wait in the delayed set, holding no
 * worker slot. Waiting here rather than going back at once keeps a busy but healthy receiver's
 * calls flowing: a trip through the delayed set costs several Redis scripts and a reload.
 */
export class UrlSlots {
  private readonly byUrl = new Map<string, UrlState>();

  constructor(
    private readonly perUrl: number,
    private readonly stallMs: number,
  ) {}

  /** Resolves true once the caller holds a place (it must `release` it), false if the URL's calls stalled. */
  acquire(url: string): Promise<boolean> {
    const now = Date.now();
    let state = this.byUrl.get(url);
    if (!state) {
      state = { inFlight: 0, waiters: [], movedAt: now };
      this.byUrl.set(url, state);
    }
    if (state.inFlight < this.perUrl) {
      state.inFlight++;
      state.movedAt = now;
      return Promise.resolve(true);
    }
    if (state.movedAt + this.stallMs <= now) return Promise.resolve(false);
    const waiting = state;
    return new Promise((resolve) => {
      // Gives up only once the URL's calls stopped moving, however long the line ahead.
      const giveUpIfStalled = () => {
        const left = waiting.movedAt + this.stallMs - Date.now();
        if (left > 0) {
          waiter.timer = setTimeout(giveUpIfStalled, left);
          return;
        }
        waiting.waiters.splice(waiting.waiters.indexOf(waiter), 1);
        resolve(false);
      };
      const waiter = { grant: () => resolve(true), timer: setTimeout(giveUpIfStalled, waiting.movedAt + this.stallMs - now) };
      waiting.waiters.push(waiter);
    });
  }

  /** How long since a call to the URL last finished or started, while all its places are taken (else 0). */
  stalledFor(url: string): number {
    const state = this.byUrl.get(url);
    return state && state.inFlight >= this.perUrl ? Date.now() - state.movedAt : 0;
  }

  /** Gives the place up: to the first waiter, if any. */
  release(url: string): void {
    const state = this.byUrl.get(url);
    if (!state) return;
    state.movedAt = Date.now();
    const next = state.waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      next.grant();
      return;
    }
    state.inFlight--;
    if (state.inFlight === 0) this.byUrl.delete(url);
  }
}
