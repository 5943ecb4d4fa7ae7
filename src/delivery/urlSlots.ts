interface UrlState {
  inFlight: number;
  waiters: { grant(): void; timer: NodeJS.Timeout }[];
  /** When a place to the URL was last taken or given back. */
  movedAt: number;
  /** When a call to the URL last finished (0: none since its calls began). */
  finishedAt: number;
}

export interface UrlSlotLimits {
  /** Calls in flight to one URL at once. */
  perUrl: number;
  /** A URL none of whose calls finished for this long is taken for hanging. */
  stallMs: number;
  /** The longest wait for a place a call spends in the process, as far as the URL's recent calls let it be foreseen. */
  maxWaitMs: number;
  /**
   * Calls in flight at once, in all, to URLs none of whose calls finished for `stallMs` (hanging,
   * or not heard from yet): the rest of the process' calls are kept for URLs that answer.
   */
  quietMax: number;
}

/** How much a finished call moves a URL's estimate of how long a place is held. */
const HELD_WEIGHT = 0.2;
/** URLs whose estimate is kept; past this, all are forgotten (a bound on memory, as for the signing keys). */
const HELD_ESTIMATES_MAX = 10_000;

/**
 * Bounds the calls in flight to each URL in this process, so that a slow or hanging receiver
 * cannot take every worker slot. A call over the bound waits for a place, in order, while the
 * URL's calls keep finishing and its turn is expected within `maxWaitMs` (from how long the
 * URL's places were held lately); else, and once none of its calls has finished for `stallMs`,
 * it is refused and goes back to the queue to wait in the delayed set, holding no worker slot.
 * Waiting here rather than going back at once keeps a busy but healthy receiver's calls
 * flowing: a trip through the delayed set costs several Redis scripts and a reload.
 * Several hanging URLs together hold at most `quietMax` places: past that, a URL none of whose
 * calls finished lately gets one call at a time (a first call to a new URL always goes; once it
 * has answered, the URL is bounded by `perUrl` alone), so that they cannot take every slot.
 */
export class UrlSlots {
  private readonly byUrl = new Map<string, UrlState>();
  /** How long a place to each URL was held lately (ms, a moving average), kept while the URL is idle too. */
  private readonly heldMs = new Map<string, number>();

  constructor(private readonly limits: UrlSlotLimits) {}

  /** Resolves true once the caller holds a place (it must `release` it), false if it should wait in the queue instead. */
  acquire(url: string): Promise<boolean> {
    const now = Date.now();
    let state = this.byUrl.get(url);
    if (!state) {
      state = { inFlight: 0, waiters: [], movedAt: now, finishedAt: 0 };
      this.byUrl.set(url, state);
    }
    if (state.inFlight < this.limits.perUrl) {
      if (state.inFlight > 0 && !this.answering(state, now) && this.quietInFlight(now) >= this.limits.quietMax) {
        return Promise.resolve(false);
      }
      state.inFlight++;
      state.movedAt = now;
      return Promise.resolve(true);
    }
    if (state.movedAt + this.limits.stallMs <= now || this.expectedWait(url, state.waiters.length + 1) > this.limits.maxWaitMs) {
      return Promise.resolve(false);
    }
    const waiting = state;
    return new Promise((resolve) => {
      // Gives up only once the URL's calls stopped moving, however long the line ahead.
      const giveUpIfStalled = () => {
        const left = waiting.movedAt + this.limits.stallMs - Date.now();
        if (left > 0) {
          waiter.timer = setTimeout(giveUpIfStalled, left);
          return;
        }
        waiting.waiters.splice(waiting.waiters.indexOf(waiter), 1);
        resolve(false);
      };
      const waiter = { grant: () => resolve(true), timer: setTimeout(giveUpIfStalled, waiting.movedAt + this.limits.stallMs - now) };
      waiting.waiters.push(waiter);
    });
  }

  /**
   * For a call refused a place: when to try again (ms). For a URL that hangs, as long as it has
   * hung so far; for one that is only slow, when a place is expected for the last in its line.
   */
  retryInMs(url: string): number {
    const state = this.byUrl.get(url);
    if (!state) return 0;
    const sinceMoved = Date.now() - state.movedAt;
    // Under its bound, it was refused as quiet: it tries again after as long as it has been.
    if (state.inFlight < this.limits.perUrl) return sinceMoved;
    return sinceMoved >= this.limits.stallMs ? sinceMoved : this.expectedWait(url, state.waiters.length + 1);
  }

  /** Gives the place up, held for `heldMs`: to the first waiter, if any. */
  release(url: string, heldMs: number): void {
    const state = this.byUrl.get(url);
    if (!state) return;
    state.movedAt = state.finishedAt = Date.now();
    const estimate = this.heldMs.get(url);
    if (estimate === undefined && this.heldMs.size >= HELD_ESTIMATES_MAX) this.heldMs.clear();
    this.heldMs.set(url, estimate === undefined ? heldMs : estimate + HELD_WEIGHT * (heldMs - estimate));
    const next = state.waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      next.grant();
      return;
    }
    state.inFlight--;
    if (state.inFlight === 0) this.byUrl.delete(url);
  }

  private answering(state: UrlState, now: number): boolean {
    return now - state.finishedAt < this.limits.stallMs;
  }

  /** Calls in flight to URLs none of whose calls finished for `stallMs`. */
  private quietInFlight(now: number): number {
    let calls = 0;
    for (const state of this.byUrl.values()) if (!this.answering(state, now)) calls += state.inFlight;
    return calls;
  }

  /** How long the `position`th in the URL's line should wait for a place: 0 while no call to it has finished yet (unknown). */
  private expectedWait(url: string, position: number): number {
    return (position * (this.heldMs.get(url) ?? 0)) / this.limits.perUrl;
  }
}
