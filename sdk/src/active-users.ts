/**
 * "N people are viewing": the active-users client for browsers.
 *
 * One tab per browser (the leader, elected with Web Locks or, failing that, over a
 * BroadcastChannel) keeps the connection to the server and relays every metrics value to the
 * other tabs (followers). Every tab registers itself with the server; only the leader beats.
 *
 * ```html
 * <script type="module">
 *   import { ActiveUsersClient } from '/sdk/active-users.js';
 *   const client = new ActiveUsersClient({ customerId: 'shop-42', apiUrl: 'https://presence.example.com' });
 *   client.onMetrics((m) => { document.querySelector('#viewers').textContent = String(m.count); });
 *   await client.init();
 * </script>
 * ```
 */

import { Backoff, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { Scope, systemClock, type Clock } from './clock.js';
import {
  LeaderConnection,
  browserWebSocketFactory,
  defaultWebSocketUrl,
  type ConnectionConfig,
  type WebSocketFactory,
} from './connection.js';
import { HttpApi, postUntilAccepted, trimBase, type FetchLike, type PresenceBody } from './http.js';
import {
  ChannelLeaderElection,
  LockLeaderElection,
  SoloElection,
  type ChannelLike,
  type LeaderElection,
  type LockManagerLike,
} from './leader.js';
import { parseMetrics, sameMetrics, type ActiveUsersOptions, type ConnectionMode, type ConnectionStatus, type Metrics } from './types.js';

export type { ActiveUsersOptions, ConnectionMode, ConnectionStatus, Metrics } from './types.js';
export { backoffDelay, Backoff, type BackoffOptions } from './backoff.js';
export {
  LockLeaderElection,
  ChannelLeaderElection,
  type LeaderElection,
  type LockManagerLike,
  type ChannelLike,
  type ChannelElectionOptions,
} from './leader.js';

/** Where the session id lives in `localStorage`. */
export const SESSION_STORAGE_KEY = 'presence:sessionId';

const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
const CUSTOMER_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** A broadcast channel the client can close. */
export interface ClosableChannel extends ChannelLike {
  close(): void;
}

/** Something to listen to for page lifecycle events (`window`, `document`). */
export interface EventSourceLike {
  addEventListener(type: string, listener: (event: unknown) => void): void;
  removeEventListener(type: string, listener: (event: unknown) => void): void;
}

/**
 * The browser APIs the client uses. Defaults to the real ones; tests and unusual hosts may
 * replace any of them through the constructor's second argument.
 */
export interface ActiveUsersEnvironment {
  clock: Clock;
  random: () => number;
  randomId: () => string;
  storage: { getItem(key: string): string | null; setItem(key: string, value: string): void } | null;
  createWebSocket: WebSocketFactory | null;
  fetch: FetchLike | null;
  sendBeacon: ((url: string, data: string) => boolean) | null;
  locks: LockManagerLike | null;
  createChannel: ((name: string) => ClosableChannel) | null;
  isVisible: () => boolean;
  /** Receives `pagehide` / `pageshow`. */
  window: EventSourceLike | null;
  /** Receives `visibilitychange`. */
  document: EventSourceLike | null;
  /** Base for a relative `apiUrl`. */
  baseUrl: string | undefined;
  console: Pick<Console, 'debug' | 'warn'>;
}

/** A random id matching `[A-Za-z0-9_-]{1,128}`: a UUID where available, else 32 hex digits. */
export function randomId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') {
    try {
      return c.randomUUID();
    } catch {
      // Not a secure context.
    }
  }
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function browserEnvironment(): ActiveUsersEnvironment {
  const g = globalThis as typeof globalThis & { [key: string]: unknown };
  const hasWindow = typeof window !== 'undefined';
  const hasDocument = typeof document !== 'undefined';
  const nav = typeof navigator !== 'undefined' ? navigator : undefined;
  let storage: ActiveUsersEnvironment['storage'] = null;
  try {
    storage = typeof localStorage !== 'undefined' ? localStorage : null;
  } catch {
    storage = null; // Access denied (storage disabled).
  }
  const locks = nav && 'locks' in nav && nav.locks ? (nav.locks as unknown as LockManagerLike) : null;
  return {
    clock: systemClock,
    random: Math.random,
    randomId,
    storage,
    createWebSocket: typeof g.WebSocket === 'function' ? browserWebSocketFactory(WebSocket) : null,
    fetch: typeof g.fetch === 'function' ? (url, init) => fetch(url, init) : null,
    sendBeacon: nav && typeof nav.sendBeacon === 'function' ? (url, data) => nav.sendBeacon(url, data) : null,
    locks,
    createChannel:
      typeof g.BroadcastChannel === 'function'
        ? (name) => new BroadcastChannel(name) as unknown as ClosableChannel
        : null,
    isVisible: () => !hasDocument || document.visibilityState !== 'hidden',
    window: hasWindow ? (window as unknown as EventSourceLike) : null,
    document: hasDocument ? (document as unknown as EventSourceLike) : null,
    baseUrl: typeof location !== 'undefined' ? location.href : undefined,
    console,
  };
}

type RelayMessage =
  | { kind: 'presence-active-users'; type: 'request' }
  | {
      kind: 'presence-active-users';
      type: 'state';
      metrics: Metrics | null;
      mode: ConnectionMode;
      connected: boolean;
    };

function isRelayMessage(data: unknown): data is RelayMessage {
  if (typeof data !== 'object' || data === null) return false;
  const m = data as Record<string, unknown>;
  return m.kind === 'presence-active-users' && (m.type === 'request' || m.type === 'state');
}

type Role = 'none' | 'leader' | 'follower';

interface ResolvedOptions {
  customerId: string;
  apiUrl: string;
  websocketUrl: string;
  foregroundHeartbeatInterval: number;
  backgroundHeartbeatInterval: number;
  pollingInterval: number;
  websocketRetryInterval: number;
  maxWebSocketFailures: number;
  backoff: BackoffOptions;
  enableWebSocket: boolean;
  enablePolling: boolean;
  platform: string;
  debug: boolean;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
    throw new TypeError(`${name} must be a positive number`);
  }
  return value;
}

export class ActiveUsersClient {
  private readonly options: ResolvedOptions;
  private readonly env: ActiveUsersEnvironment;
  private readonly sessionId: string;
  private readonly tabId: string;
  private readonly http: HttpApi | null;
  private readonly listeners = new Set<(m: Metrics) => void>();
  private metrics: Metrics | null = null;
  private role: Role = 'none';
  private election: LeaderElection | null = null;
  private electionChannel: ClosableChannel | null = null;
  private relay: ClosableChannel | null = null;
  private connection: LeaderConnection | null = null;
  private followerScope: Scope | null = null;
  private followerJoined = false;
  private relayedMode: ConnectionMode = 'websocket';
  private relayedConnected = false;
  private initPromise: Promise<void> | null = null;
  private resolveInit: (() => void) | null = null;
  private suspended = false;
  private destroyed = false;
  private unsubscribeElection: (() => void) | null = null;

  constructor(options: ActiveUsersOptions, environment: Partial<ActiveUsersEnvironment> = {}) {
    if (!options || typeof options.customerId !== 'string' || !CUSTOMER_PATTERN.test(options.customerId)) {
      throw new TypeError('customerId must be 1-64 of A-Z a-z 0-9 - _');
    }
    if (typeof options.apiUrl !== 'string') throw new TypeError('apiUrl is required');
    this.env = { ...browserEnvironment(), ...environment };
    const enableWebSocket = options.enableWebSocket ?? true;
    const enablePolling = options.enablePolling ?? true;
    if (!enableWebSocket && !enablePolling) {
      throw new TypeError('enableWebSocket and enablePolling cannot both be false');
    }
    const apiUrl = trimBase(options.apiUrl);
    const initialMs = options.backoff?.initialMs ?? DEFAULT_BACKOFF.initialMs;
    this.options = {
      customerId: options.customerId,
      apiUrl,
      websocketUrl: options.websocketUrl ?? defaultWebSocketUrl(apiUrl, this.env.baseUrl),
      foregroundHeartbeatInterval: positive(options.foregroundHeartbeatInterval, 30_000, 'foregroundHeartbeatInterval'),
      backgroundHeartbeatInterval: positive(options.backgroundHeartbeatInterval, 60_000, 'backgroundHeartbeatInterval'),
      pollingInterval: positive(options.pollingInterval, 30_000, 'pollingInterval'),
      websocketRetryInterval: positive(options.websocketRetryInterval, 30_000, 'websocketRetryInterval'),
      maxWebSocketFailures: positive(options.maxWebSocketFailures, 3, 'maxWebSocketFailures'),
      backoff: {
        initialMs,
        maxMs: options.backoff?.maxMs ?? Math.max(initialMs, DEFAULT_BACKOFF.maxMs),
        jitter: options.backoff?.jitter ?? DEFAULT_BACKOFF.jitter,
      },
      enableWebSocket,
      enablePolling,
      platform: options.platform ?? 'web',
      debug: options.debug ?? false,
    };
    this.sessionId = this.loadSessionId();
    this.tabId = this.newId();
    this.http = this.env.fetch ? new HttpApi(apiUrl, this.env.fetch, () => this.env.clock.now()) : null;
  }

  /**
   * Starts the client: joins the election and registers this tab with the server. Resolves once
   * this tab is registered (the leader connected, or the follower's join went through). Never
   * rejects: network errors are retried in the background.
   */
  init(): Promise<void> {
    if (this.initPromise) return this.initPromise;
    this.initPromise = new Promise<void>((resolve) => {
      this.resolveInit = resolve;
    });
    if (this.destroyed) {
      this.finishInit();
      return this.initPromise;
    }
    const channelName = `presence-active-users:${this.options.customerId}`;
    const { createChannel, locks } = this.env;
    if (createChannel) {
      this.relay = createChannel(channelName);
      this.relay.addEventListener('message', this.onRelayMessage);
    }
    if (!createChannel) {
      // Tabs cannot talk to each other: each one is its own leader.
      this.election = new SoloElection();
    } else if (locks) {
      this.election = new LockLeaderElection(locks, channelName);
    } else {
      this.electionChannel = createChannel(`${channelName}:election`);
      this.election = new ChannelLeaderElection(this.electionChannel, { tabId: this.tabId, clock: this.env.clock });
    }
    this.unsubscribeElection = this.election.onChange((leading) => this.setRole(leading ? 'leader' : 'follower'));
    this.env.window?.addEventListener('pagehide', this.onPageHide);
    this.env.window?.addEventListener('pageshow', this.onPageShow);
    this.env.document?.addEventListener('visibilitychange', this.onVisibilityChange);
    this.log('init', { sessionId: this.sessionId, tabId: this.tabId });
    this.election.start();
    return this.initPromise;
  }

  /** Calls `cb` on every new value, and at once with the latest one if known. Returns an unsubscribe function. */
  onMetrics(cb: (m: Metrics) => void): () => void {
    this.listeners.add(cb);
    if (this.metrics) cb(this.metrics);
    return () => {
      this.listeners.delete(cb);
    };
  }

  /** The latest value, or null before the first one. */
  getMetrics(): Metrics | null {
    return this.metrics;
  }

  getConnectionStatus(): ConnectionStatus {
    const leading = this.role === 'leader' && this.connection !== null;
    return {
      mode: leading ? this.connection!.mode : this.relayedMode,
      isLeader: leading,
      connected: leading
        ? this.connection!.connected
        : this.role === 'follower' && this.followerJoined && this.relayedConnected,
      sessionId: this.sessionId,
      tabId: this.tabId,
      heartbeatInterval: leading ? this.connection!.heartbeatInterval() : 0,
    };
  }

  /** Leaves (this tab), closes the connection, releases leadership and removes every listener. */
  destroy(): void {
    if (this.destroyed) return;
    const wasStarted = this.initPromise !== null && !this.suspended;
    this.destroyed = true;
    if (wasStarted) this.sendLeave();
    this.suspend();
    this.unsubscribeElection?.();
    this.unsubscribeElection = null;
    this.env.window?.removeEventListener('pagehide', this.onPageHide);
    this.env.window?.removeEventListener('pageshow', this.onPageShow);
    this.env.document?.removeEventListener('visibilitychange', this.onVisibilityChange);
    this.relay?.removeEventListener('message', this.onRelayMessage);
    this.relay?.close();
    this.relay = null;
    this.electionChannel?.close();
    this.electionChannel = null;
    this.listeners.clear();
    this.finishInit();
  }

  // -------------------------------------------------------------------------------------------
  // Roles
  // -------------------------------------------------------------------------------------------

  private setRole(role: Role): void {
    if (this.destroyed || this.suspended || role === this.role) return;
    const wasLeader = this.role === 'leader';
    this.leaveRole();
    this.role = role;
    this.log('role', role);
    if (role === 'leader') this.lead();
    else if (role === 'follower') this.follow(wasLeader);
  }

  /** Stops what the current role does. */
  private leaveRole(): void {
    this.connection?.stop();
    this.connection = null;
    this.followerScope?.cancel();
    this.followerScope = null;
    this.followerJoined = false;
    this.role = 'none';
  }

  private lead(): void {
    const o = this.options;
    const config: ConnectionConfig = {
      customerId: o.customerId,
      sessionId: this.sessionId,
      tabId: this.tabId,
      platform: o.platform,
      apiUrl: o.apiUrl,
      websocketUrl: o.websocketUrl,
      foregroundHeartbeatInterval: o.foregroundHeartbeatInterval,
      backgroundHeartbeatInterval: o.backgroundHeartbeatInterval,
      pollingInterval: o.pollingInterval,
      websocketRetryInterval: o.websocketRetryInterval,
      maxWebSocketFailures: o.maxWebSocketFailures,
      backoff: o.backoff,
      enableWebSocket: o.enableWebSocket,
      enablePolling: o.enablePolling,
    };
    const connection = new LeaderConnection(
      config,
      {
        clock: this.env.clock,
        random: this.env.random,
        createWebSocket: this.env.createWebSocket,
        fetch: this.env.fetch,
        isVisible: this.env.isVisible,
        log: (...args) => this.log(...args),
        warn: (...args) => this.env.console.warn('[presence]', ...args),
      },
      {
        metrics: (m) => {
          if (connection !== this.connection) return;
          this.setMetrics(m);
          this.broadcastState();
        },
        status: () => {
          if (connection !== this.connection) return;
          this.broadcastState();
        },
        registered: () => {
          if (connection === this.connection) this.finishInit();
        },
      },
    );
    this.connection = connection;
    connection.start();
    this.broadcastState();
  }

  private follow(wasLeader: boolean): void {
    const scope = new Scope(this.env.clock);
    this.followerScope = scope;
    this.postRelay({ kind: 'presence-active-users', type: 'request' });
    if (!this.http) {
      this.finishInit();
      return;
    }
    const http = this.http;
    void (async () => {
      // A tab that just stopped leading closed its socket, which the server takes as this tab's
      // leave; give that a moment to land before joining again over HTTP.
      if (wasLeader && !(await scope.sleep(1000))) return;
      const joined = await postUntilAccepted(
        http,
        '/presence/join',
        () => this.body(true),
        scope,
        new Backoff(this.options.backoff, this.env.random),
        (...args) => this.log(...args),
      );
      if (!scope.active) return;
      this.followerJoined = joined;
      if (!joined) this.env.console.warn('[presence] the server refused to register this tab');
      this.finishInit();
    })();
  }

  // -------------------------------------------------------------------------------------------
  // Relay between tabs
  // -------------------------------------------------------------------------------------------

  private readonly onRelayMessage = (event: { data: unknown }): void => {
    const message = event.data;
    if (this.destroyed || !isRelayMessage(message)) return;
    if (message.type === 'request') {
      if (this.role === 'leader') this.broadcastState();
      return;
    }
    if (this.role === 'leader') return;
    this.relayedMode = message.mode === 'polling' ? 'polling' : 'websocket';
    this.relayedConnected = message.connected === true;
    const metrics = parseMetrics(message.metrics, this.options.customerId);
    if (metrics) this.setMetrics(metrics);
  };

  private broadcastState(): void {
    if (this.role !== 'leader' || !this.connection) return;
    this.postRelay({
      kind: 'presence-active-users',
      type: 'state',
      metrics: this.metrics,
      mode: this.connection.mode,
      connected: this.connection.connected,
    });
  }

  private postRelay(message: RelayMessage): void {
    try {
      this.relay?.postMessage(message);
    } catch {
      // Channel closed.
    }
  }

  private setMetrics(m: Metrics): void {
    if (sameMetrics(this.metrics, m)) return;
    if (this.metrics && m.timestamp < this.metrics.timestamp) return; // an older tick, relayed late
    this.metrics = m;
    for (const cb of [...this.listeners]) {
      try {
        cb(m);
      } catch (err) {
        this.env.console.warn('[presence] onMetrics listener failed', err);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Page lifecycle
  // -------------------------------------------------------------------------------------------

  private readonly onVisibilityChange = (): void => {
    this.connection?.visibilityChanged();
  };

  /** The page is going away (closed, navigated, or put in the back-forward cache). */
  private readonly onPageHide = (): void => {
    if (this.destroyed || this.suspended) return;
    this.sendLeave();
    this.suspend();
  };

  /** Restored from the back-forward cache: take part again. */
  private readonly onPageShow = (event: unknown): void => {
    const persisted = (event as { persisted?: boolean } | null)?.persisted === true;
    if (!persisted || this.destroyed || !this.suspended) return;
    this.log('restored from the back-forward cache');
    this.suspended = false;
    this.election?.start();
  };

  private suspend(): void {
    if (this.suspended) return;
    this.suspended = true;
    this.election?.stop();
    this.leaveRole();
  }

  /** Tells the server this tab is gone, in a way that survives the page unloading. */
  private sendLeave(): void {
    const url = `${this.options.apiUrl}/presence/leave`;
    const data = JSON.stringify(this.body(false));
    try {
      if (this.env.sendBeacon && this.env.sendBeacon(url, data)) return;
    } catch {
      // Fall through to fetch.
    }
    try {
      void this.env.fetch?.(url, { method: 'POST', body: data, keepalive: true }).catch(() => undefined);
    } catch {
      // Nothing else to try.
    }
  }

  // -------------------------------------------------------------------------------------------

  private finishInit(): void {
    const resolve = this.resolveInit;
    this.resolveInit = null;
    resolve?.();
  }

  private body(withPlatform: boolean): PresenceBody {
    const body: PresenceBody = {
      customerId: this.options.customerId,
      sessionId: this.sessionId,
      tabId: this.tabId,
      timestamp: this.env.clock.now(),
    };
    if (withPlatform) body.platform = this.options.platform;
    return body;
  }

  private newId(): string {
    const id = this.env.randomId();
    return ID_PATTERN.test(id) ? id : randomId().replace(/[^A-Za-z0-9_-]/g, '').slice(0, 128);
  }

  private loadSessionId(): string {
    const storage = this.env.storage;
    try {
      const stored = storage?.getItem(SESSION_STORAGE_KEY);
      if (stored && ID_PATTERN.test(stored)) return stored;
    } catch {
      // Storage unavailable: a per-page session.
    }
    const id = this.newId();
    try {
      storage?.setItem(SESSION_STORAGE_KEY, id);
    } catch {
      // Quota or privacy mode: the id lives as long as the page.
    }
    return id;
  }

  private log(...args: unknown[]): void {
    if (this.options.debug) this.env.console.debug('[presence]', ...args);
  }
}
