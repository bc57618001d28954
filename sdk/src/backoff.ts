/**
 * Jittered exponential backoff.
 *
 * The rule, for attempt `n` (0 for the first retry):
 *
 *     base  = min(maxMs, initialMs * 2^n)
 *     delay = base * (1 + jitter * (2 * random() - 1))     // uniformly within base * [1 - jitter, 1 + jitter)
 *     delay = min(maxMs, max(0, round(delay)))
 *
 * So the delay is never above `maxMs`; once the base reaches the cap, delays fall in
 * `[maxMs * (1 - jitter), maxMs]`. `jitter` is clamped to `[0, 1]`; with `jitter: 0` the delays are
 * exactly `initialMs, 2 * initialMs, 4 * initialMs, …, maxMs`.
 */

export interface BackoffOptions {
  /** Delay of the first retry before jitter. Default 500. */
  initialMs: number;
  /** Upper bound of every delay. Default 30000. */
  maxMs: number;
  /** Fraction of the delay added or removed at random, 0..1. Default 0.5. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, jitter: 0.5 };

/** The delay before retry number `attempt` (0-based); see the module comment for the rule. */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions,
  random: () => number = Math.random,
): number {
  const initial = Math.max(0, opts.initialMs);
  const max = Math.max(initial, opts.maxMs);
  const jitter = Math.min(1, Math.max(0, opts.jitter));
  const n = Number.isFinite(attempt) ? Math.max(0, Math.floor(attempt)) : 0;
  // 2^n overflows to Infinity for large n; min() then caps it.
  const base = Math.min(max, initial * Math.pow(2, n));
  const r = Math.min(1, Math.max(0, random()));
  const delay = base * (1 + jitter * (2 * r - 1));
  return Math.min(max, Math.max(0, Math.round(delay)));
}

/** Stateful backoff: each {@link Backoff.next} returns the next, longer, delay. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly opts: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  next(): number {
    const delay = backoffDelay(this.attempt, this.opts, this.random);
    this.attempt++;
    return delay;
  }

  reset(): void {
    this.attempt = 0;
  }
}
