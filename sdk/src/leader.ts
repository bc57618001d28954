/**
 * Leader election among the tabs of one browser: exactly one tab (the leader) talks to the
 * server for the whole session, the others follow it.
 *
 * - {@link LockLeaderElection} uses the Web Locks API: the leader holds an exclusive lock, the
 *   others queue for it; the browser releases it when the leader's tab closes or crashes.
 * - {@link ChannelLeaderElection} is the fallback where `navigator.locks` is missing: tabs
 *   announce themselves over a BroadcastChannel, a silent leader is replaced after a timeout and
 *   conflicting claims go to the lowest tab id.
 *
 * Both take their browser dependencies as parameters so they can run against fakes.
 */

import { systemClock, type Clock, type TimerHandle } from './clock.js';

export interface LeaderElection {
  /** Starts taking part in the election. Calling it again after {@link stop} starts over. */
  start(): void;
  /** Whether this tab leads right now. */
  isLeader(): boolean;
  /**
   * Calls `cb` once the role of this tab is first known (`true` for leader, `false` for
   * follower) and then on every change. Returns a function that unsubscribes.
   */
  onChange(cb: (isLeader: boolean) => void): () => void;
  /**
   * Leaves the election and releases leadership if held. Listeners are not called: the caller
   * knows it stopped.
   */
  stop(): void;
}

abstract class ElectionBase implements LeaderElection {
  private readonly listeners = new Set<(isLeader: boolean) => void>();
  private decided = false;
  private leading = false;

  abstract start(): void;
  abstract stop(): void;

  isLeader(): boolean {
    return this.leading;
  }

  onChange(cb: (isLeader: boolean) => void): () => void {
    this.listeners.add(cb);
    return () => {
      this.listeners.delete(cb);
    };
  }

  /** Records the role and tells the listeners if it is new. */
  protected setLeader(leading: boolean): void {
    if (this.decided && this.leading === leading) return;
    this.decided = true;
    this.leading = leading;
    for (const cb of [...this.listeners]) {
      try {
        cb(leading);
      } catch (err) {
        // A failing listener must not stop the election or the other listeners.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  /** Forgets the role without telling anyone (after stop). */
  protected resetRole(): void {
    this.decided = false;
    this.leading = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Web Locks
// ---------------------------------------------------------------------------------------------

export interface LockRequestOptions {
  mode?: 'exclusive' | 'shared';
  ifAvailable?: boolean;
  signal?: AbortSignal;
}

/** The part of the browser's `LockManager` (`navigator.locks`) used here. */
export interface LockManagerLike {
  request(
    name: string,
    options: LockRequestOptions,
    callback: (lock: unknown) => unknown,
  ): Promise<unknown>;
}

/**
 * Leadership is an exclusive Web Lock named `name`, held until {@link stop} (or until the tab
 * goes away, which releases it in the browser).
 *
 * On start the tab first asks for the lock with `ifAvailable`: if it is taken the tab knows at
 * once that it follows, and then queues for the lock to take over when the leader releases it.
 */
export class LockLeaderElection extends ElectionBase {
  private generation = 0;
  private running = false;
  private release: (() => void) | null = null;
  private abort: AbortController | null = null;

  constructor(
    private readonly locks: LockManagerLike,
    private readonly name: string,
  ) {
    super();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const generation = ++this.generation;
    this.locks
      .request(this.name, { mode: 'exclusive', ifAvailable: true }, (lock) => {
        if (generation !== this.generation) return undefined;
        if (lock) return this.hold(generation);
        this.setLeader(false);
        this.queue(generation);
        return undefined;
      })
      .catch(() => {
        // Only fails if the lock manager is unusable; the tab then simply never leads.
      });
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.generation++;
    this.abort?.abort();
    this.abort = null;
    const release = this.release;
    this.release = null;
    release?.();
    this.resetRole();
  }

  private queue(generation: number): void {
    const options: LockRequestOptions = { mode: 'exclusive' };
    if (typeof AbortController !== 'undefined') {
      this.abort = new AbortController();
      options.signal = this.abort.signal;
    }
    this.locks
      .request(this.name, options, (lock) => {
        if (generation !== this.generation || !lock) return undefined;
        return this.hold(generation);
      })
      .catch(() => {
        // Aborted by stop().
      });
  }

  /** Holds the lock: the returned promise settles (releasing the lock) on stop(). */
  private hold(generation: number): Promise<void> {
    return new Promise<void>((resolve) => {
      if (generation !== this.generation) {
        resolve();
        return;
      }
      this.release = resolve;
      this.setLeader(true);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// BroadcastChannel fallback
// ---------------------------------------------------------------------------------------------

/** The part of a `BroadcastChannel` used here. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  removeEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
}

export interface ChannelElectionOptions {
  /** This tab's id. Ids must be distinct; on conflicting claims the lowest wins. */
  tabId: string;
  /** How often the leader announces itself. Default 1000. */
  heartbeatMs?: number;
  /** Silence after which a follower claims. Default `3 * heartbeatMs`. */
  timeoutMs?: number;
  /** How long a starting tab waits for a leader to answer before it claims. Default `heartbeatMs`. */
  startupTimeoutMs?: number;
  /** How long a claim stays open to competing claims before the tab leads. Default `heartbeatMs / 2`. */
  settleMs?: number;
  clock?: Clock;
}

type ElectionMessageType = 'query' | 'claim' | 'leader' | 'resign';

interface ElectionMessage {
  kind: 'presence-election';
  type: ElectionMessageType;
  tabId: string;
}

function isElectionMessage(data: unknown): data is ElectionMessage {
  if (typeof data !== 'object' || data === null) return false;
  const m = data as Record<string, unknown>;
  return (
    m.kind === 'presence-election' &&
    typeof m.tabId === 'string' &&
    (m.type === 'query' || m.type === 'claim' || m.type === 'leader' || m.type === 'resign')
  );
}

type Role = 'stopped' | 'pending' | 'follower' | 'candidate' | 'leader';

/**
 * Leader election over a broadcast channel, for browsers without Web Locks.
 *
 * - A starting tab sends `query`; a leader answers with `leader` at once.
 * - The leader sends `leader` every `heartbeatMs`.
 * - A tab that has heard no leader for `timeoutMs` (3 heartbeats; `startupTimeoutMs` right after
 *   start) sends `claim` and becomes a candidate. If within `settleMs` it hears a `leader`, or a
 *   `claim` from a lower tab id, it goes back to following; otherwise it leads.
 * - A leader answers any `claim` with `leader`, so a claimant that merely missed heartbeats
 *   backs off. Two leaders that hear each other (after a partition or a frozen tab) settle on
 *   the lowest tab id.
 * - A leader that stops sends `resign`, and the followers claim at once.
 */
export class ChannelLeaderElection extends ElectionBase {
  private readonly tabId: string;
  private readonly heartbeatMs: number;
  private readonly timeoutMs: number;
  private readonly startupTimeoutMs: number;
  private readonly settleMs: number;
  private readonly clock: Clock;
  private role: Role = 'stopped';
  private leaderId: string | null = null;
  private silenceTimer: TimerHandle = undefined;
  private settleTimer: TimerHandle = undefined;
  private heartbeatTimer: TimerHandle = undefined;
  private readonly listener = (event: { data: unknown }): void => this.receive(event.data);

  constructor(
    private readonly channel: ChannelLike,
    options: ChannelElectionOptions,
  ) {
    super();
    this.tabId = options.tabId;
    this.heartbeatMs = options.heartbeatMs ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 3 * this.heartbeatMs;
    this.startupTimeoutMs = options.startupTimeoutMs ?? this.heartbeatMs;
    this.settleMs = options.settleMs ?? this.heartbeatMs / 2;
    this.clock = options.clock ?? systemClock;
  }

  /** The leader this tab knows of (itself when leading), or null. */
  currentLeader(): string | null {
    return this.leaderId;
  }

  start(): void {
    if (this.role !== 'stopped') return;
    this.role = 'pending';
    this.leaderId = null;
    this.channel.addEventListener('message', this.listener);
    this.post('query');
    this.armSilence(this.startupTimeoutMs);
  }

  stop(): void {
    if (this.role === 'stopped') return;
    const wasLeader = this.role === 'leader';
    this.role = 'stopped';
    this.clearTimers();
    this.channel.removeEventListener('message', this.listener);
    if (wasLeader) this.post('resign');
    this.leaderId = null;
    this.resetRole();
  }

  private receive(data: unknown): void {
    if (this.role === 'stopped' || !isElectionMessage(data) || data.tabId === this.tabId) return;
    const from = data.tabId;
    switch (data.type) {
      case 'query':
        if (this.role === 'leader') this.post('leader');
        break;
      case 'leader':
        if (this.role === 'leader') {
          if (from < this.tabId) this.follow(from);
          else this.post('leader');
        } else {
          this.follow(from);
        }
        break;
      case 'claim':
        if (this.role === 'leader') {
          this.post('leader');
        } else if (this.role === 'candidate' && from < this.tabId) {
          // The lower id wins; give it the usual time to announce itself.
          this.follow(from);
        }
        break;
      case 'resign':
        if (this.role !== 'leader' && this.role !== 'candidate' && (this.leaderId === null || this.leaderId === from)) {
          this.leaderId = null;
          this.claim();
        }
        break;
    }
  }

  private follow(leaderId: string): void {
    const wasLeader = this.role === 'leader';
    this.role = 'follower';
    this.leaderId = leaderId;
    this.clock.clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    if (wasLeader) {
      this.clock.clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = undefined;
    }
    this.armSilence(this.timeoutMs);
    this.setLeader(false);
  }

  private armSilence(ms: number): void {
    this.clock.clearTimeout(this.silenceTimer);
    this.silenceTimer = this.clock.setTimeout(() => {
      this.silenceTimer = undefined;
      if (this.role === 'pending' || this.role === 'follower') this.claim();
    }, ms);
  }

  private claim(): void {
    if (this.role === 'stopped' || this.role === 'leader' || this.role === 'candidate') return;
    this.role = 'candidate';
    this.clock.clearTimeout(this.silenceTimer);
    this.silenceTimer = undefined;
    this.post('claim');
    this.settleTimer = this.clock.setTimeout(() => {
      this.settleTimer = undefined;
      if (this.role === 'candidate') this.lead();
    }, this.settleMs);
  }

  private lead(): void {
    this.role = 'leader';
    this.leaderId = this.tabId;
    this.post('leader');
    this.scheduleHeartbeat();
    this.setLeader(true);
  }

  private scheduleHeartbeat(): void {
    this.heartbeatTimer = this.clock.setTimeout(() => {
      this.heartbeatTimer = undefined;
      if (this.role !== 'leader') return;
      this.post('leader');
      this.scheduleHeartbeat();
    }, this.heartbeatMs);
  }

  private clearTimers(): void {
    this.clock.clearTimeout(this.silenceTimer);
    this.clock.clearTimeout(this.settleTimer);
    this.clock.clearTimeout(this.heartbeatTimer);
    this.silenceTimer = this.settleTimer = this.heartbeatTimer = undefined;
  }

  private post(type: ElectionMessageType): void {
    const message: ElectionMessage = { kind: 'presence-election', type, tabId: this.tabId };
    try {
      this.channel.postMessage(message);
    } catch {
      // A closed channel: nothing to tell.
    }
  }
}

/** Every tab leads: used where tabs cannot coordinate (no BroadcastChannel). */
export class SoloElection extends ElectionBase {
  private running = false;

  start(): void {
    if (this.running) return;
    this.running = true;
    this.setLeader(true);
  }

  stop(): void {
    this.running = false;
    this.resetRole();
  }
}
