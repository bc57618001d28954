/**
 * Visibility-aware heartbeat timing: beats every `foregroundMs` while the page is visible and
 * every `backgroundMs` while it is hidden.
 *
 * The next beat is always due at `lastBeat + interval(visibility)`. When the visibility changes
 * the pending beat is rescheduled with the new interval; a beat already overdue under the new
 * interval (typically: the page comes back to the foreground after more than `foregroundMs`)
 * is sent at once.
 */

import type { Clock, TimerHandle } from './clock.js';

export interface HeartbeatOptions {
  foregroundMs: number;
  backgroundMs: number;
  clock: Clock;
  /** Whether the page is visible right now. */
  isVisible: () => boolean;
  /** Sends one beat. */
  beat: () => void;
}

export class HeartbeatScheduler {
  private timer: TimerHandle = undefined;
  private running = false;
  private last = 0;

  constructor(private readonly opts: HeartbeatOptions) {}

  /** The interval that applies now. */
  interval(): number {
    return this.opts.isVisible() ? this.opts.foregroundMs : this.opts.backgroundMs;
  }

  /** Whether beats are scheduled. */
  get active(): boolean {
    return this.running;
  }

  /** When the last beat (or the start, which counts as one) happened. */
  get lastBeatAt(): number {
    return this.last;
  }

  /**
   * Starts beating. The registration that precedes it (a join or an `auth`) counts as a beat,
   * so the first beat is one interval away.
   */
  start(): void {
    this.running = true;
    this.last = this.opts.clock.now();
    this.schedule();
  }

  stop(): void {
    this.running = false;
    this.opts.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Call on `visibilitychange`. */
  visibilityChanged(): void {
    if (this.running) this.schedule();
  }

  private schedule(): void {
    this.opts.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const delay = this.last + this.interval() - this.opts.clock.now();
    if (delay <= 0) {
      this.fire();
      return;
    }
    this.timer = this.opts.clock.setTimeout(() => {
      this.timer = undefined;
      this.fire();
    }, delay);
  }

  private fire(): void {
    if (!this.running) return;
    this.last = this.opts.clock.now();
    this.opts.beat();
    // beat() may have stopped us (e.g. the connection failed synchronously).
    if (this.running) this.schedule();
  }
}
