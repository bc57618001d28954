import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LeaderConnection,
  classifyClose,
  defaultWebSocketUrl,
  type ConnectionConfig,
} from '../src/connection.js';
import { parseRetryAfter } from '../src/http.js';
import { parseMetrics } from '../src/types.js';
import type { Metrics } from '../src/types.js';
import { FakeClock, FakeFetch, FakeSockets, flush } from './fakes.js';

const CONFIG: ConnectionConfig = {
  customerId: 'shop-42',
  sessionId: 'session-1',
  tabId: 'tab-1',
  platform: 'web',
  apiUrl: 'https://presence.example.com',
  websocketUrl: 'wss://presence.example.com/ws/active-users',
  foregroundHeartbeatInterval: 30_000,
  backgroundHeartbeatInterval: 60_000,
  pollingInterval: 30_000,
  websocketRetryInterval: 30_000,
  maxWebSocketFailures: 3,
  // No jitter: delays are exactly 500, 1000, 2000, ...
  backoff: { initialMs: 500, maxMs: 30_000, jitter: 0 },
  enableWebSocket: true,
  enablePolling: true,
};

function setup(overrides: Partial<ConnectionConfig> = {}) {
  const clock = new FakeClock();
  const sockets = new FakeSockets();
  const http = new FakeFetch(clock);
  let visible = true;
  const metrics: Metrics[] = [];
  let statusEvents = 0;
  let registered = 0;
  const warnings: unknown[][] = [];
  const connection = new LeaderConnection(
    { ...CONFIG, ...overrides },
    {
      clock,
      random: () => 0.5,
      createWebSocket: sockets.factory,
      fetch: http.fetch,
      isVisible: () => visible,
      log: () => undefined,
      warn: (...args) => warnings.push(args),
    },
    {
      metrics: (m) => metrics.push(m),
      status: () => statusEvents++,
      registered: () => registered++,
    },
  );
  return {
    clock,
    sockets,
    http,
    connection,
    metrics,
    warnings,
    get statusEvents() {
      return statusEvents;
    },
    get registered() {
      return registered;
    },
    setVisible(v: boolean) {
      visible = v;
      connection.visibilityChanged();
    },
  };
}

const TICK = { customerId: 'shop-42', timestamp: 1768127445000, count: 17, ema: 15.42 };

test('websocket: auth on open, connected on hello, metrics pushed, pings at the visibility-dependent interval', async () => {
  const t = setup();
  t.connection.start();
  const ws = t.sockets.last;
  assert.equal(ws.url, CONFIG.websocketUrl);
  ws.open();
  const auth = ws.sent[0]!;
  assert.deepEqual(
    { ...auth, timestamp: typeof auth.timestamp },
    { type: 'auth', customerId: 'shop-42', sessionId: 'session-1', tabId: 'tab-1', timestamp: 'number', platform: 'web' },
  );
  assert.equal(t.connection.connected, false);
  assert.equal(t.registered, 0);

  ws.hello();
  assert.equal(t.connection.connected, true);
  assert.equal(t.connection.mode, 'websocket');
  assert.equal(t.registered, 1);

  ws.frame({ type: 'metrics:update', data: TICK });
  ws.frame({ type: 'metrics:update', data: { ...TICK, customerId: 'someone-else' } });
  ws.frame({ type: 'pong', timestamp: 1 });
  ws.frame({ type: 'error', code: 'rate_limited', message: 'slow down' });
  assert.deepEqual(t.metrics, [TICK]);

  await t.clock.advance(30_000);
  assert.equal(ws.sentOfType('ping').length, 1);
  t.setVisible(false);
  await t.clock.advance(59_000);
  assert.equal(ws.sentOfType('ping').length, 1, 'hidden: nothing until 60 s after the last beat');
  await t.clock.advance(1000);
  assert.equal(ws.sentOfType('ping').length, 2);
  await t.clock.advance(45_000);
  t.setVisible(true);
  assert.equal(ws.sentOfType('ping').length, 3, 'visible again after 45 s: beats at once');
  assert.equal(t.http.requests.length, 0, 'no HTTP in websocket mode');
});

test('websocket: reconnects with backoff, then falls back to polling after maxWebSocketFailures', async () => {
  const t = setup();
  t.connection.start();
  t.sockets.last.serverClose(1006);
  assert.equal(t.connection.failureCount, 1);
  await t.clock.advance(499);
  assert.equal(t.sockets.all.length, 1);
  await t.clock.advance(1);
  assert.equal(t.sockets.all.length, 2, 'first retry after 500 ms');
  t.sockets.last.open();
  t.sockets.last.serverClose(4429);
  await t.clock.advance(1000);
  assert.equal(t.sockets.all.length, 3, 'second retry after 1000 ms');
  assert.equal(t.connection.mode, 'websocket');

  t.http.respond = (req) =>
    req.method === 'GET' ? { status: 200, body: TICK } : { status: 200, body: { success: true } };
  t.sockets.last.serverClose(1006);
  assert.equal(t.connection.mode, 'polling');
  await flush();
  assert.equal(t.connection.connected, true);
  assert.equal(t.registered, 1);
  const join = t.http.to('/presence/join');
  assert.equal(join.length, 1);
  assert.deepEqual(
    { ...join[0]!.body, timestamp: typeof join[0]!.body!.timestamp },
    { customerId: 'shop-42', sessionId: 'session-1', tabId: 'tab-1', timestamp: 'number', platform: 'web' },
  );
  const metricsGets = t.http.to('/metrics');
  assert.equal(metricsGets.length, 1);
  assert.equal(new URL(metricsGets[0]!.url).searchParams.get('customerId'), 'shop-42');
  assert.deepEqual(t.metrics, [TICK]);

  await t.clock.advance(30_000);
  assert.equal(t.http.to('/presence/beat').length, 1, 'beats over HTTP');
  assert.equal(t.http.to('/metrics').length, 2, 'polls every pollingInterval');
  assert.equal(t.sockets.all.length, 4, 'tries the websocket again after websocketRetryInterval');
});

test('polling: a websocket retry that reaches hello switches back and stops the polling timers', async () => {
  const t = setup({ maxWebSocketFailures: 1 });
  t.connection.start();
  t.sockets.last.serverClose(1006);
  assert.equal(t.connection.mode, 'polling');
  await t.clock.advance(30_000);
  const probe = t.sockets.last;
  assert.equal(t.sockets.all.length, 2);
  assert.equal(t.connection.mode, 'polling', 'still polling while the retry connects');
  probe.open();
  assert.equal(probe.sentOfType('auth').length, 1);
  probe.hello();
  assert.equal(t.connection.mode, 'websocket');
  assert.equal(t.connection.connected, true);

  const httpBefore = t.http.requests.length;
  await t.clock.advance(120_000);
  assert.equal(t.http.requests.length, httpBefore, 'no more beats or polls over HTTP');
  assert.equal(probe.sentOfType('ping').length, 4, 'beats over the websocket instead');
  assert.equal(t.sockets.all.length, 2, 'no further retries');
});

test('polling: a failed websocket retry is tried again every websocketRetryInterval', async () => {
  const t = setup({ maxWebSocketFailures: 1 });
  t.connection.start();
  t.sockets.last.serverClose(1006);
  await t.clock.advance(30_000);
  assert.equal(t.sockets.all.length, 2);
  t.sockets.last.serverClose(1006);
  await t.clock.advance(29_999);
  assert.equal(t.sockets.all.length, 2);
  await t.clock.advance(1);
  assert.equal(t.sockets.all.length, 3);
  assert.equal(t.connection.mode, 'polling');
});

test('websocket: 1001 reconnects at once without counting a failure; a stable socket resets the count', async () => {
  const t = setup();
  t.connection.start();
  t.sockets.last.serverClose(1006);
  await t.clock.advance(500);
  t.sockets.last.serverClose(1006);
  assert.equal(t.connection.failureCount, 2);
  await t.clock.advance(1000);
  t.sockets.last.open();
  t.sockets.last.hello();
  t.sockets.last.serverClose(1001);
  assert.equal(t.connection.failureCount, 2, 'going away is not a failure');
  await t.clock.advance(250); // random() = 0.5 of initialMs
  assert.equal(t.sockets.all.length, 4);
  t.sockets.last.open();
  t.sockets.last.hello();
  await t.clock.advance(11_000);
  t.sockets.last.serverClose(1006);
  assert.equal(t.connection.failureCount, 0, 'up over 10 s: the count starts over');
  assert.equal(t.connection.mode, 'websocket');
  await t.clock.advance(500);
  assert.equal(t.sockets.all.length, 5);
});

test('websocket: a drop soon after hello counts as a failure; protocol-error closes are warned about', async () => {
  const t = setup();
  t.connection.start();
  t.sockets.last.open();
  t.sockets.last.hello();
  await t.clock.advance(2000);
  t.sockets.last.serverClose(1008, 'too many invalid messages');
  assert.equal(t.connection.failureCount, 1);
  assert.equal(t.connection.connected, false);
  assert.equal(t.warnings.length, 1);
  assert.match(String(t.warnings[0]![0]), /1008/);
});

test('websocket: a socket that never says hello is given up and counts as a failure', async () => {
  const t = setup();
  t.connection.start();
  t.sockets.last.open();
  await t.clock.advance(15_000);
  assert.equal(t.sockets.all[0]!.closedByClient, 1000);
  assert.equal(t.connection.failureCount, 1);
  await t.clock.advance(500);
  assert.equal(t.sockets.all.length, 2);
});

test('polling only: the join is retried on 503 and 429 (honouring Retry-After), never thrown', async () => {
  const t = setup({ enableWebSocket: false });
  const answers = [
    { status: 503, body: { error: 'Service Unavailable' } },
    { status: 429, body: { error: 'Too Many Requests' }, headers: { 'Retry-After': '5' } },
    { status: 0 },
    { status: 200, body: { success: true } },
  ];
  t.http.respond = (req) => (req.url.endsWith('/presence/join') ? answers.shift()! : { status: 404, body: { error: 'Not Found' } });
  t.connection.start();
  assert.equal(t.connection.mode, 'polling');
  await t.clock.advance(60_000);
  const joins = t.http.to('/presence/join').map((r) => r.at - t.http.requests[0]!.at);
  assert.deepEqual(joins, [0, 500, 5500, 7500], '500 ms backoff, then Retry-After 5 s, then 2000 ms backoff');
  assert.equal(t.connection.connected, true);
  assert.equal(t.registered, 1);
  assert.deepEqual(t.metrics, [], 'a 404 from /metrics means no value yet');
  assert.equal(t.sockets.all.length, 0, 'the websocket is disabled');
});

test('polling: a failed beat is retried before the next one is due', async () => {
  const t = setup({ enableWebSocket: false });
  let beatFailures = 1;
  t.http.respond = (req) => {
    if (req.url.endsWith('/presence/beat') && beatFailures-- > 0) return { status: 503 };
    return { status: 200, body: { success: true } };
  };
  t.connection.start();
  await t.clock.advance(31_000);
  const beats = t.http.to('/presence/beat').map((r) => r.at - t.http.requests[0]!.at);
  assert.deepEqual(beats, [30_000, 30_500]);
});

test('stop closes the socket and cancels every timer', async () => {
  const t = setup();
  t.connection.start();
  t.sockets.last.open();
  t.sockets.last.hello();
  t.connection.stop();
  assert.equal(t.sockets.last.closedByClient, 1000);
  assert.equal(t.connection.connected, false);
  await t.clock.advance(600_000);
  assert.equal(t.sockets.all.length, 1);
  assert.equal(t.sockets.last.sentOfType('ping').length, 0);
  assert.equal(t.clock.pendingTimers, 0);
});

test('helpers: websocket URL, close classification, Retry-After, metrics parsing', () => {
  assert.equal(defaultWebSocketUrl('https://presence.example.com/'), 'wss://presence.example.com/ws/active-users');
  assert.equal(defaultWebSocketUrl('http://127.0.0.1:3000'), 'ws://127.0.0.1:3000/ws/active-users');
  assert.equal(defaultWebSocketUrl('/api', 'https://shop.example.com/page'), 'wss://shop.example.com/api/ws/active-users');

  assert.equal(classifyClose(1001, null, 0, 10_000), 'going-away');
  assert.equal(classifyClose(1006, null, 5, 10_000), 'failure');
  assert.equal(classifyClose(1006, 0, 9_999, 10_000), 'failure');
  assert.equal(classifyClose(1006, 0, 10_000, 10_000), 'stable');

  assert.equal(parseRetryAfter('1', 0), 1000);
  assert.equal(parseRetryAfter(null, 0), null);
  assert.equal(parseRetryAfter('soon', 0), null);
  assert.equal(parseRetryAfter(new Date(65_000).toUTCString(), 5_000), 60_000);

  assert.deepEqual(parseMetrics(TICK, 'shop-42'), TICK);
  assert.equal(parseMetrics({ customerId: 'shop-42' }, 'shop-42'), null, 'count missing: no value yet');
  assert.equal(parseMetrics({ ...TICK, customerId: 'other' }, 'shop-42'), null);
  assert.deepEqual(parseMetrics({ count: 3 }, 'shop-42', 7), { customerId: 'shop-42', timestamp: 7, count: 3, ema: 3 });
});
