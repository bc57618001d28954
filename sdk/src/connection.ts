/**
 * The leader tab's connection to the server: a WebSocket on `/ws/active-users` with
 * reconnection, falling back to HTTP polling after repeated failures and returning to the
 * WebSocket once it works again. Browser APIs are injected, so it runs against fakes in tests.
 */

import { Backoff, type BackoffOptions } from './backoff.js';
import { Scope, type Clock, type TimerHandle } from './clock.js';
import { HeartbeatScheduler } from './heartbeat.js';
import { HttpApi, isRetryable, postUntilAccepted, trimBase, type FetchLike, type PresenceBody } from './http.js';
import { parseMetrics, type ConnectionMode, type Metrics } from './types.js';

export interface SocketHandlers {
  onOpen(): void;
  onMessage(data: unknown): void;
  onClose(code: number, reason: string): void;
  onError(): void;
}

/** A WebSocket as the connection uses it. Closing it from this side never calls `onClose`. */
export interface SocketHandle {
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string, handlers: SocketHandlers) => SocketHandle;

/** Adapts the browser's `WebSocket` constructor. */
export function browserWebSocketFactory(Ctor: typeof WebSocket): WebSocketFactory {
  return (url, handlers) => {
    const ws = new Ctor(url);
    ws.onopen = () => handlers.onOpen();
    ws.onmessage = (event) => handlers.onMessage(event.data);
    ws.onclose = (event) => handlers.onClose(event.code, event.reason);
    ws.onerror = () => handlers.onError();
    return {
      send(data) {
        if (ws.readyState === 1) ws.send(data);
      },
      close(code, reason) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close(code, reason);
        } catch {
          // Already closed.
        }
      },
    };
  };
}

/** `apiUrl` with `http` -> `ws`, `https` -> `wss`, plus `/ws/active-users`. */
export function defaultWebSocketUrl(apiUrl: string, base?: string): string {
  let url = trimBase(apiUrl);
  if (!/^[a-z][a-z0-9+.-]*:/i.test(url) && base !== undefined) {
    url = trimBase(new URL(url || '/', base).href);
  }
  return url.replace(/^http(s?):/i, (_m, s: string) => `ws${s}:`) + '/ws/active-users';
}

/** Close codes the server uses for protocol errors: worth a warning, they point at a bug. */
export const PROTOCOL_ERROR_CODES: readonly number[] = [1008, 1009, 4408];

export type CloseOutcome = 'going-away' | 'stable' | 'failure';

/**
 * How a closed socket counts: `going-away` (1001, the server shutting down: reconnect at once,
 * not a failure), `stable` (it had been up `stableMs` after `hello`: the failure count resets) or
 * `failure` (closed before `hello`, or dropped soon after).
 */
export function classifyClose(code: number, helloAt: number | null, closedAt: number, stableMs: number): CloseOutcome {
  if (code === 1001) return 'going-away';
  if (helloAt !== null && closedAt - helloAt >= stableMs) return 'stable';
  return 'failure';
}

export interface ConnectionConfig {
  customerId: string;
  sessionId: string;
  tabId: string;
  platform: string;
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
  /** A socket up this long after `hello` resets the failure count. Default 10000. */
  stableMs?: number;
  /** A socket without `hello` this long after opening is given up. Default 15000. */
  helloTimeoutMs?: number;
}

export interface ConnectionEnv {
  clock: Clock;
  random: () => number;
  createWebSocket: WebSocketFactory | null;
  fetch: FetchLike | null;
  isVisible: () => boolean;
  log: (...args: unknown[]) => void;
  warn: (...args: unknown[]) => void;
}

export interface ConnectionEvents {
  /** A metrics value arrived. */
  metrics(m: Metrics): void;
  /** `mode` or `connected` changed. */
  status(): void;
  /** The tab is registered (or registration was refused for good); called once per start. */
  registered(): void;
}

interface Attempt {
  handle: SocketHandle | null;
  openedAt: number;
  helloAt: number | null;
  closed: boolean;
  helloTimer: TimerHandle;
}

export class LeaderConnection {
  private readonly http: HttpApi | null;
  private readonly heartbeat: HeartbeatScheduler;
  private readonly wsBackoff: Backoff;
  private readonly httpBackoff: Backoff;
  private readonly beatBackoff: Backoff;
  private readonly stableMs: number;
  private readonly helloTimeoutMs: number;
  /** Timers of the current mode; cancelled on every mode switch and on stop. */
  private scope: Scope;
  private running = false;
  private currentMode: ConnectionMode = 'websocket';
  private isConnected = false;
  private failures = 0;
  private goingAwayStreak = 0;
  private primary: Attempt | null = null;
  private probe: Attempt | null = null;
  private beatSeq = 0;
  private announced = false;

  constructor(
    private readonly config: ConnectionConfig,
    private readonly env: ConnectionEnv,
    private readonly events: ConnectionEvents,
  ) {
    this.http = env.fetch ? new HttpApi(config.apiUrl, env.fetch, () => env.clock.now()) : null;
    this.heartbeat = new HeartbeatScheduler({
      foregroundMs: config.foregroundHeartbeatInterval,
      backgroundMs: config.backgroundHeartbeatInterval,
      clock: env.clock,
      isVisible: env.isVisible,
      beat: () => this.beat(),
    });
    this.wsBackoff = new Backoff(config.backoff, env.random);
    this.httpBackoff = new Backoff(config.backoff, env.random);
    this.beatBackoff = new Backoff(config.backoff, env.random);
    this.stableMs = config.stableMs ?? 10_000;
    this.helloTimeoutMs = config.helloTimeoutMs ?? 15_000;
    this.scope = new Scope(env.clock);
    this.scope.cancel();
  }

  get mode(): ConnectionMode {
    return this.currentMode;
  }

  get connected(): boolean {
    return this.isConnected;
  }

  /** Consecutive WebSocket failures so far. */
  get failureCount(): number {
    return this.failures;
  }

  /** The heartbeat interval that applies now. */
  heartbeatInterval(): number {
    return this.heartbeat.interval();
  }

  private get canWebSocket(): boolean {
    return this.config.enableWebSocket && this.env.createWebSocket !== null;
  }

  private get canPoll(): boolean {
    return this.config.enablePolling && this.http !== null;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.announced = false;
    this.failures = 0;
    this.goingAwayStreak = 0;
    this.wsBackoff.reset();
    if (this.canWebSocket) {
      this.scope = new Scope(this.env.clock);
      this.setStatus('websocket', false);
      this.primary = this.openSocket();
    } else if (this.canPoll) {
      this.enterPolling();
    } else {
      this.env.warn('neither WebSocket nor HTTP polling is available or enabled');
      this.announceRegistered();
    }
  }

  /** Closes everything. Closing the socket is the tab's leave on the server. */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.scope.cancel();
    this.heartbeat.stop();
    this.closeAttempt(this.primary);
    this.closeAttempt(this.probe);
    this.primary = this.probe = null;
    this.isConnected = false;
  }

  /** Call on `visibilitychange`. */
  visibilityChanged(): void {
    this.heartbeat.visibilityChanged();
  }

  // -------------------------------------------------------------------------------------------
  // WebSocket
  // -------------------------------------------------------------------------------------------

  private openSocket(): Attempt {
    const attempt: Attempt = {
      handle: null,
      openedAt: this.env.clock.now(),
      helloAt: null,
      closed: false,
      helloTimer: undefined,
    };
    const handlers: SocketHandlers = {
      onOpen: () => {
        if (attempt.closed) return;
        this.sendFrame(attempt, {
          type: 'auth',
          customerId: this.config.customerId,
          sessionId: this.config.sessionId,
          tabId: this.config.tabId,
          timestamp: this.env.clock.now(),
          platform: this.config.platform,
        });
      },
      onMessage: (data) => {
        if (!attempt.closed) this.receive(attempt, data);
      },
      onClose: (code, reason) => {
        if (attempt.closed) return;
        attempt.closed = true;
        this.scope.clearTimeout(attempt.helloTimer);
        this.socketClosed(attempt, code, reason);
      },
      onError: () => {
        this.env.log('websocket error');
      },
    };
    const scope = this.scope;
    try {
      attempt.handle = this.env.createWebSocket!(this.config.websocketUrl, handlers);
    } catch (err) {
      this.env.log('websocket could not be created', err);
      attempt.closed = true;
      scope.setTimeout(() => this.socketClosed(attempt, 1006, 'not created'), 0);
      return attempt;
    }
    attempt.helloTimer = scope.setTimeout(() => {
      if (attempt.closed || attempt.helloAt !== null) return;
      this.env.log('no hello within', this.helloTimeoutMs, 'ms');
      this.closeAttempt(attempt);
      this.socketClosed(attempt, 1006, 'no hello');
    }, this.helloTimeoutMs);
    return attempt;
  }

  private closeAttempt(attempt: Attempt | null): void {
    if (!attempt || attempt.closed) return;
    attempt.closed = true;
    this.scope.clearTimeout(attempt.helloTimer);
    try {
      attempt.handle?.close(1000, 'client closing');
    } catch {
      // Already gone.
    }
  }

  private sendFrame(attempt: Attempt, frame: object): void {
    try {
      attempt.handle?.send(JSON.stringify(frame));
    } catch (err) {
      this.env.log('websocket send failed', err);
    }
  }

  private receive(attempt: Attempt, data: unknown): void {
    if (typeof data !== 'string') return;
    let msg: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(data);
      if (typeof parsed !== 'object' || parsed === null) return;
      msg = parsed as Record<string, unknown>;
    } catch {
      return;
    }
    switch (msg.type) {
      case 'hello':
        if (attempt.helloAt !== null) return;
        attempt.helloAt = this.env.clock.now();
        this.scope.clearTimeout(attempt.helloTimer);
        this.env.log('websocket hello', msg.sessionId);
        if (attempt === this.primary) this.primaryReady();
        else if (attempt === this.probe) this.probeReady(attempt);
        break;
      case 'metrics:update': {
        const metrics = parseMetrics(msg.data, this.config.customerId, this.env.clock.now());
        if (metrics) this.events.metrics(metrics);
        break;
      }
      case 'pong':
        this.env.log('pong', msg.timestamp);
        break;
      case 'error':
        this.env.log('server error', msg.code, msg.message);
        break;
      default:
        this.env.log('unknown frame', msg.type);
    }
  }

  private primaryReady(): void {
    this.goingAwayStreak = 0;
    this.setStatus('websocket', true);
    this.heartbeat.start();
    this.announceRegistered();
  }

  /** A background WebSocket of polling mode made it: switch back to WebSocket mode. */
  private probeReady(attempt: Attempt): void {
    this.env.log('websocket works again; leaving polling mode');
    this.probe = null;
    // Cancels the polling timers and any join/beat retries; the socket's own timers are done.
    this.scope.cancel();
    this.scope = new Scope(this.env.clock);
    this.heartbeat.stop();
    this.failures = 0;
    this.wsBackoff.reset();
    this.primary = attempt;
    this.primaryReady();
  }

  private socketClosed(attempt: Attempt, code: number, reason: string): void {
    if (!this.running) return;
    if (attempt === this.probe) {
      this.probe = null;
      this.env.log('websocket retry failed', code, reason);
      this.scope.setTimeout(() => this.startProbe(), this.config.websocketRetryInterval);
      return;
    }
    if (attempt !== this.primary) return;
    this.primary = null;
    this.heartbeat.stop();
    this.setStatus('websocket', false);
    if (PROTOCOL_ERROR_CODES.includes(code)) {
      this.env.warn(`websocket closed by the server for a protocol error: ${code} ${reason}`);
    } else {
      this.env.log('websocket closed', code, reason);
    }
    const outcome = classifyClose(code, attempt.helloAt, this.env.clock.now(), this.stableMs);
    let delay: number;
    if (outcome === 'going-away') {
      // The edge is shutting down: reconnect (to another edge) at once, spread over up to
      // initialMs so its clients do not all arrive in the same instant. Repeated without a
      // hello in between, back off as for failures.
      this.goingAwayStreak++;
      delay =
        this.goingAwayStreak === 1
          ? Math.floor(this.env.random() * this.config.backoff.initialMs)
          : this.wsBackoff.next();
    } else if (outcome === 'stable') {
      this.failures = 0;
      this.wsBackoff.reset();
      delay = this.wsBackoff.next();
    } else {
      this.failures++;
      if (this.failures >= this.config.maxWebSocketFailures && this.canPoll) {
        this.env.log(`${this.failures} websocket failures in a row; falling back to polling`);
        this.enterPolling();
        return;
      }
      delay = this.wsBackoff.next();
    }
    this.env.log('reconnecting in', delay, 'ms');
    this.scope.setTimeout(() => {
      if (this.running && this.primary === null && this.currentMode === 'websocket') {
        this.primary = this.openSocket();
      }
    }, delay);
  }

  // -------------------------------------------------------------------------------------------
  // Polling
  // -------------------------------------------------------------------------------------------

  private enterPolling(): void {
    this.scope.cancel();
    this.closeAttempt(this.primary);
    this.primary = null;
    this.heartbeat.stop();
    this.scope = new Scope(this.env.clock);
    const scope = this.scope;
    this.setStatus('polling', false);
    void postUntilAccepted(this.http!, '/presence/join', () => this.body(true), scope, this.httpBackoff, this.env.log).then(
      (joined) => {
        if (!scope.active) return;
        if (joined) {
          this.setStatus('polling', true);
          this.heartbeat.start();
        } else {
          this.env.warn('the server refused to register this tab');
        }
        this.announceRegistered();
      },
    );
    this.pollMetrics(scope);
    if (this.canWebSocket) scope.setTimeout(() => this.startProbe(), this.config.websocketRetryInterval);
  }

  private startProbe(): void {
    if (!this.running || this.currentMode !== 'polling' || this.probe !== null) return;
    this.env.log('trying the websocket again');
    this.probe = this.openSocket();
  }

  private pollMetrics(scope: Scope): void {
    const path = `/metrics?customerId=${encodeURIComponent(this.config.customerId)}`;
    void this.http!.get(path).then((result) => {
      if (!scope.active) return;
      let next = this.config.pollingInterval;
      if (result.status === 200) {
        const metrics = parseMetrics(result.body, this.config.customerId, this.env.clock.now());
        if (metrics) this.events.metrics(metrics);
      } else if (result.status !== 404) {
        this.env.log('GET /metrics failed', result.status);
        if (result.retryAfterMs !== null) next = Math.max(next, result.retryAfterMs);
      }
      scope.setTimeout(() => this.pollMetrics(scope), next);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Beats
  // -------------------------------------------------------------------------------------------

  private beat(): void {
    if (this.currentMode === 'websocket') {
      if (this.primary && this.primary.helloAt !== null) {
        this.sendFrame(this.primary, { type: 'ping', timestamp: this.env.clock.now() });
      }
    } else {
      void this.beatOverHttp(this.scope);
    }
  }

  /** Retries a failed beat with backoff until it goes through or the next beat is due. */
  private async beatOverHttp(scope: Scope): Promise<void> {
    const seq = ++this.beatSeq;
    this.beatBackoff.reset();
    while (scope.active && seq === this.beatSeq) {
      const result = await this.http!.post('/presence/beat', this.body(false));
      if (!scope.active || seq !== this.beatSeq) return;
      if (result.status >= 200 && result.status < 300) return;
      if (!isRetryable(result.status)) {
        this.env.log('beat refused', result.status, result.body);
        return;
      }
      const delay = Math.max(this.beatBackoff.next(), result.retryAfterMs ?? 0);
      if (!(await scope.sleep(delay))) return;
    }
  }

  private body(withPlatform: boolean): PresenceBody {
    const body: PresenceBody = {
      customerId: this.config.customerId,
      sessionId: this.config.sessionId,
      tabId: this.config.tabId,
      timestamp: this.env.clock.now(),
    };
    if (withPlatform) body.platform = this.config.platform;
    return body;
  }

  // -------------------------------------------------------------------------------------------

  private setStatus(mode: ConnectionMode, connected: boolean): void {
    if (mode === this.currentMode && connected === this.isConnected) return;
    this.currentMode = mode;
    this.isConnected = connected;
    this.events.status();
  }

  private announceRegistered(): void {
    if (this.announced) return;
    this.announced = true;
    this.events.registered();
  }
}
