/** Public types of the active-users client. */

/** One tick of a customer's active-user count, as the server publishes it. */
export interface Metrics {
  customerId: string;
  /** When the server computed the value (ms since the epoch). */
  timestamp: number;
  /** Browsers (sessions) on the site right now. */
  count: number;
  /** Exponential moving average of `count`, rounded to two decimals. */
  ema: number;
}

export type ConnectionMode = 'websocket' | 'polling';

export interface ConnectionStatus {
  /** How the leader tab talks to the server (a follower reports what its leader relayed). */
  mode: ConnectionMode;
  /** Whether this tab is the one that talks to the server for the whole browser. */
  isLeader: boolean;
  /**
   * Leader: its WebSocket is authenticated, or its HTTP join went through in polling mode.
   * Follower: its own join went through and the leader reports being connected.
   */
  connected: boolean;
  sessionId: string;
  tabId: string;
  /** The leader's current heartbeat interval (foreground or background); 0 for followers, which never beat. */
  heartbeatInterval: number;
}

export interface ActiveUsersOptions {
  /** The site: 1-64 of `A-Z a-z 0-9 - _`. */
  customerId: string;
  /** Base URL of the presence service, e.g. `https://presence.example.com`. */
  apiUrl: string;
  /** Default: `apiUrl` with `http` -> `ws`, `https` -> `wss`, plus `/ws/active-users`. */
  websocketUrl?: string;
  /** Heartbeat interval while the page is visible. Default 30000. */
  foregroundHeartbeatInterval?: number;
  /** Heartbeat interval while the page is hidden. Default 60000. */
  backgroundHeartbeatInterval?: number;
  /** Period of `GET /metrics` in polling mode. Default 30000. */
  pollingInterval?: number;
  /** In polling mode, how often to try the WebSocket again. Default 30000. */
  websocketRetryInterval?: number;
  /** Consecutive failed WebSocket connects or early drops before falling back to polling. Default 3. */
  maxWebSocketFailures?: number;
  /** Reconnect and retry delays. Defaults: 500 ms, 30000 ms, 0.5. */
  backoff?: { initialMs?: number; maxMs?: number; jitter?: number };
  /** Default true. */
  enableWebSocket?: boolean;
  /** Default true. */
  enablePolling?: boolean;
  /** Sent with the registration. Default `"web"`. */
  platform?: string;
  /** Logs the protocol to the console. */
  debug?: boolean;
}

/**
 * Reads a metrics value from a server message. `count` is required (a value without it means
 * "no value yet"); a missing `ema` is taken as the count, a missing `timestamp` as now. A value
 * for another customer than `customerId` is rejected.
 */
export function parseMetrics(value: unknown, customerId?: string, now: number = Date.now()): Metrics | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.count !== 'number' || !Number.isFinite(v.count)) return null;
  const id = typeof v.customerId === 'string' ? v.customerId : customerId;
  if (id === undefined) return null;
  if (customerId !== undefined && id !== customerId) return null;
  return {
    customerId: id,
    timestamp: typeof v.timestamp === 'number' && Number.isFinite(v.timestamp) ? v.timestamp : now,
    count: v.count,
    ema: typeof v.ema === 'number' && Number.isFinite(v.ema) ? v.ema : v.count,
  };
}

/** Whether two values are the same tick. */
export function sameMetrics(a: Metrics | null, b: Metrics | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.customerId === b.customerId && a.timestamp === b.timestamp && a.count === b.count && a.ema === b.ema
  );
}
