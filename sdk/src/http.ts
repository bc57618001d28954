/**
 * The HTTP side of the active-users protocol: `POST /presence/{join,beat,leave}` and
 * `GET /metrics`. Errors never escape: every call resolves with a status (0 for a network
 * error), and the callers decide whether to retry.
 */

import type { Backoff } from './backoff.js';
import type { Scope } from './clock.js';

/** The part of `fetch` used here. */
export type FetchLike = (
  url: string,
  init?: { method?: string; body?: string; keepalive?: boolean; headers?: Record<string, string> },
) => Promise<{
  status: number;
  headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}>;

export interface HttpResult {
  /** HTTP status, or 0 when the request did not complete. */
  status: number;
  /** The parsed JSON body, or null. */
  body: unknown;
  /** `Retry-After` in milliseconds, when the server sent one. */
  retryAfterMs: number | null;
}

/** The fields of every presence call. */
export interface PresenceBody {
  customerId: string;
  sessionId: string;
  tabId: string;
  timestamp: number;
  platform?: string;
  userAgent?: string;
}

/** Network errors, timeouts, rate limits and server errors are worth retrying; other 4xx are not. */
export function isRetryable(status: number): boolean {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/** Parses a `Retry-After` header (seconds or an HTTP date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (trimmed === '') return null;
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - now);
}

/** Removes trailing slashes so paths can be appended. */
export function trimBase(url: string): string {
  return url.replace(/\/+$/, '');
}

export class HttpApi {
  private readonly base: string;

  constructor(
    apiUrl: string,
    private readonly fetchFn: FetchLike,
    private readonly now: () => number = Date.now,
  ) {
    this.base = trimBase(apiUrl);
  }

  url(path: string): string {
    return this.base + path;
  }

  /**
   * POSTs JSON as a string body: the browser sends it as `text/plain`, a "simple" request that
   * needs no CORS preflight; the server parses the bytes whatever the content type.
   */
  post(path: string, body: object): Promise<HttpResult> {
    return this.request(this.url(path), { method: 'POST', body: JSON.stringify(body) });
  }

  get(path: string): Promise<HttpResult> {
    return this.request(this.url(path), { method: 'GET' });
  }

  private async request(url: string, init: { method: string; body?: string }): Promise<HttpResult> {
    let response;
    try {
      response = await this.fetchFn(url, init);
    } catch {
      return { status: 0, body: null, retryAfterMs: null };
    }
    let body: unknown = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    let retryAfter: string | null = null;
    try {
      retryAfter = response.headers.get('Retry-After');
    } catch {
      retryAfter = null;
    }
    return { status: response.status, body, retryAfterMs: parseRetryAfter(retryAfter, this.now()) };
  }
}

/**
 * POSTs until the server accepts (2xx), a non-retryable answer comes back, or the scope is
 * cancelled. Retries wait for the backoff delay, or for `Retry-After` when that is longer.
 * Resolves `true` once accepted.
 */
export async function postUntilAccepted(
  http: HttpApi,
  path: string,
  body: () => object,
  scope: Scope,
  backoff: Backoff,
  log: (...args: unknown[]) => void,
): Promise<boolean> {
  backoff.reset();
  while (scope.active) {
    const result = await http.post(path, body());
    if (!scope.active) return false;
    if (result.status >= 200 && result.status < 300) return true;
    if (!isRetryable(result.status)) {
      log(`POST ${path} refused`, result.status, result.body);
      return false;
    }
    const delay = Math.max(backoff.next(), result.retryAfterMs ?? 0);
    log(`POST ${path} failed`, result.status, `retrying in ${delay} ms`);
    if (!(await scope.sleep(delay))) return false;
  }
  return false;
}
