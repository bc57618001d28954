/**
 * Time, injected: the browser's timers in production, a manual clock in tests.
 */

/** An opaque timer handle (a number in browsers). */
export type TimerHandle = unknown;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** The real clock: `Date.now` and the global timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * A group of timers that can be cancelled at once. Timers of a cancelled scope never fire,
 * and pending {@link Scope.sleep}s resolve `false` so async loops can exit.
 */
export class Scope {
  private readonly timers = new Set<TimerHandle>();
  private readonly sleepers = new Set<() => void>();
  private cancelled = false;

  constructor(readonly clock: Clock) {}

  get active(): boolean {
    return !this.cancelled;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    if (this.cancelled) return undefined;
    const handle = this.clock.setTimeout(() => {
      this.timers.delete(handle);
      if (!this.cancelled) fn();
    }, Math.max(0, ms));
    this.timers.add(handle);
    return handle;
  }

  clearTimeout(handle: TimerHandle): void {
    if (handle === undefined || handle === null) return;
    if (this.timers.delete(handle)) this.clock.clearTimeout(handle);
  }

  /** Resolves `true` after `ms`, or `false` as soon as the scope is cancelled. */
  sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.cancelled) {
        resolve(false);
        return;
      }
      const wake = (): void => resolve(false);
      this.sleepers.add(wake);
      this.setTimeout(() => {
        this.sleepers.delete(wake);
        resolve(true);
      }, ms);
    });
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const handle of this.timers) this.clock.clearTimeout(handle);
    this.timers.clear();
    const sleepers = [...this.sleepers];
    this.sleepers.clear();
    for (const wake of sleepers) wake();
  }
}
