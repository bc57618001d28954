import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  ActiveUsersClient,
  SESSION_STORAGE_KEY,
  type ActiveUsersEnvironment,
  type EventSourceLike,
  type Metrics,
} from '../src/active-users.js';
import { ChannelHub, FakeClock, FakeFetch, FakeLockManager, FakeSockets, flush } from './fakes.js';

const OPTIONS = { customerId: 'shop-42', apiUrl: 'https://presence.example.com/' };
const TICK: Metrics = { customerId: 'shop-42', timestamp: 1768127445000, count: 17, ema: 15.42 };

class FakeEvents implements EventSourceLike {
  private readonly listeners = new Map<string, Set<(event: unknown) => void>>();
  addEventListener(type: string, listener: (event: unknown) => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(listener);
  }
  removeEventListener(type: string, listener: (event: unknown) => void): void {
    this.listeners.get(type)?.delete(listener);
  }
  dispatch(type: string, event: unknown = {}): void {
    for (const l of [...(this.listeners.get(type) ?? [])]) l(event);
  }
  count(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }
}

/** One browser: shared locks, channels, storage, network; one page per tab(). */
function browser(options: { locks?: boolean } = {}) {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const locks = new FakeLockManager();
  const sockets = new FakeSockets();
  const http = new FakeFetch(clock);
  const beacons: { url: string; body: Record<string, unknown> }[] = [];
  const store = new Map<string, string>();
  let ids = 0;
  const tab = (beaconWorks = true, isVisible: () => boolean = () => true) => {
    const window = new FakeEvents();
    const document = new FakeEvents();
    const env: Partial<ActiveUsersEnvironment> = {
      clock,
      random: () => 0.5,
      randomId: () => `id-${++ids}`,
      storage: { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => void store.set(k, v) },
      createWebSocket: sockets.factory,
      fetch: http.fetch,
      sendBeacon: (url, data) => {
        if (!beaconWorks) return false;
        beacons.push({ url, body: JSON.parse(data) as Record<string, unknown> });
        return true;
      },
      locks: options.locks === false ? null : locks,
      createChannel: (name) => hub.channel(name),
      isVisible,
      window,
      document,
      baseUrl: undefined,
      console: { debug: () => undefined, warn: () => undefined },
    };
    const client = new ActiveUsersClient(OPTIONS, env);
    return { client, window, document };
  };
  return { clock, hub, locks, sockets, http, beacons, store, tab };
}

test('one connection per browser: the leader connects, a follower joins over HTTP and shows the relayed count', async () => {
  const b = browser();
  const first = b.tab();
  const leaderInit = first.client.init();
  await flush();
  assert.equal(b.sockets.all.length, 1);
  const ws = b.sockets.last;
  assert.equal(ws.url, 'wss://presence.example.com/ws/active-users');
  ws.open();
  ws.hello();
  await leaderInit;
  ws.frame({ type: 'metrics:update', data: TICK });
  assert.deepEqual(first.client.getMetrics(), TICK);

  const second = b.tab();
  const seen: Metrics[] = [];
  second.client.onMetrics((m) => seen.push(m));
  await second.client.init();
  await b.clock.advance(1);
  assert.equal(b.sockets.all.length, 1, 'the follower opens no socket');
  const joins = b.http.to('/presence/join');
  assert.equal(joins.length, 1);
  const leader = first.client.getConnectionStatus();
  const follower = second.client.getConnectionStatus();
  assert.equal(joins[0]!.body!.tabId, follower.tabId);
  assert.equal(joins[0]!.body!.sessionId, leader.sessionId);
  assert.equal(joins[0]!.body!.platform, 'web');
  assert.deepEqual(seen, [TICK], 'the follower got the latest value as soon as it asked');

  assert.equal(leader.isLeader, true);
  assert.equal(leader.connected, true);
  assert.equal(leader.heartbeatInterval, 30_000);
  assert.equal(follower.isLeader, false);
  assert.equal(follower.connected, true);
  assert.equal(follower.mode, 'websocket');
  assert.equal(follower.heartbeatInterval, 0);
  assert.equal(leader.sessionId, follower.sessionId, 'one session per browser');
  assert.notEqual(leader.tabId, follower.tabId);
  assert.equal(b.store.get(SESSION_STORAGE_KEY), leader.sessionId);

  const next = { ...TICK, timestamp: TICK.timestamp + 5000, count: 18 };
  ws.frame({ type: 'metrics:update', data: next });
  await b.clock.advance(1);
  assert.deepEqual(seen, [TICK, next]);
  assert.deepEqual(second.client.getMetrics(), next);

  // Only the leader beats.
  await b.clock.advance(60_000);
  assert.equal(ws.sentOfType('ping').length, 2);
  assert.equal(b.http.to('/presence/beat').length, 0);
});

test('onMetrics calls back at once with a known value and unsubscribes', async () => {
  const b = browser();
  const { client } = b.tab();
  void client.init();
  await flush();
  b.sockets.last.open();
  b.sockets.last.hello();
  b.sockets.last.frame({ type: 'metrics:update', data: TICK });
  const seen: number[] = [];
  const off = client.onMetrics((m) => seen.push(m.count));
  assert.deepEqual(seen, [17]);
  off();
  b.sockets.last.frame({ type: 'metrics:update', data: { ...TICK, timestamp: TICK.timestamp + 1, count: 20 } });
  assert.deepEqual(seen, [17]);
  assert.equal(client.getMetrics()!.count, 20);
});

test('destroy sends a leave beacon, closes the socket and hands leadership to the other tab', async () => {
  const b = browser();
  const first = b.tab();
  void first.client.init();
  await flush();
  b.sockets.last.open();
  b.sockets.last.hello();
  const second = b.tab();
  await second.client.init();

  first.client.destroy();
  assert.equal(b.beacons.length, 1);
  assert.equal(b.beacons[0]!.url, 'https://presence.example.com/presence/leave');
  assert.equal(b.beacons[0]!.body.tabId, first.client.getConnectionStatus().tabId);
  assert.equal(b.sockets.all[0]!.closedByClient, 1000);
  assert.equal(first.window.count() + first.document.count(), 0, 'listeners removed');

  await b.clock.advance(1);
  assert.equal(b.sockets.all.length, 2, 'the follower took over');
  b.sockets.last.open();
  assert.equal(b.sockets.last.sent[0]!.tabId, second.client.getConnectionStatus().tabId);
  b.sockets.last.hello();
  assert.equal(second.client.getConnectionStatus().isLeader, true);
});

test('pagehide leaves (fetch keepalive when sendBeacon refuses) and releases leadership; pageshow from the cache rejoins', async () => {
  const b = browser();
  const first = b.tab(false);
  void first.client.init();
  await flush();
  b.sockets.last.open();
  b.sockets.last.hello();
  const second = b.tab();
  await second.client.init();

  first.window.dispatch('pagehide', { persisted: true });
  const leaves = b.http.to('/presence/leave');
  assert.equal(leaves.length, 1);
  assert.equal(leaves[0]!.keepalive, true);
  assert.equal(leaves[0]!.body!.tabId, first.client.getConnectionStatus().tabId);
  await b.clock.advance(1);
  assert.equal(second.client.getConnectionStatus().isLeader, true);

  const joinsBefore = b.http.to('/presence/join').length;
  first.window.dispatch('pageshow', { persisted: true });
  await b.clock.advance(1);
  assert.equal(first.client.getConnectionStatus().isLeader, false);
  assert.equal(b.http.to('/presence/join').length, joinsBefore + 1, 'registered again as a follower');
});

test('without Web Locks the tabs elect over the channel', async () => {
  const b = browser({ locks: false });
  const first = b.tab();
  const firstInit = first.client.init();
  await b.clock.advance(2000);
  assert.equal(first.client.getConnectionStatus().isLeader, true);
  b.sockets.last.open();
  b.sockets.last.hello();
  await firstInit;
  const second = b.tab();
  await Promise.all([second.client.init(), b.clock.advance(10)]);
  assert.equal(second.client.getConnectionStatus().isLeader, false);
  await b.clock.advance(10_000);
  assert.equal(b.sockets.all.length, 1);
  assert.equal(first.client.getConnectionStatus().isLeader, true);
});

test('visibility changes reschedule the leader beat', async () => {
  const b = browser();
  let visible = true;
  const { client, document } = b.tab(true, () => visible);
  void client.init();
  await flush();
  b.sockets.last.open();
  b.sockets.last.hello();
  visible = false;
  document.dispatch('visibilitychange');
  assert.equal(client.getConnectionStatus().heartbeatInterval, 60_000);
  await b.clock.advance(59_000);
  assert.equal(b.sockets.last.sentOfType('ping').length, 0);
  await b.clock.advance(1000);
  assert.equal(b.sockets.last.sentOfType('ping').length, 1);
});

test('options are validated', () => {
  assert.throws(() => new ActiveUsersClient({ customerId: 'bad id!', apiUrl: 'https://x' }), /customerId/);
  assert.throws(
    () => new ActiveUsersClient({ ...OPTIONS, enableWebSocket: false, enablePolling: false }),
    /cannot both be false/,
  );
  assert.throws(() => new ActiveUsersClient({ ...OPTIONS, pollingInterval: -1 }), /pollingInterval/);
});

test('the browser entry point only has relative imports', () => {
  const seen = new Set<string>();
  const visit = (file: URL): void => {
    if (seen.has(file.href)) return;
    seen.add(file.href);
    const source = readFileSync(file, 'utf8');
    for (const match of source.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s*['"]([^'"]+)['"]/g)) {
      const spec = match[1]!;
      assert.match(spec, /^\.\.?\/.*\.js$/, `${file.pathname} imports "${spec}"`);
      visit(new URL(spec, file));
    }
  };
  visit(new URL('../src/active-users.js', import.meta.url));
  assert.ok(seen.size >= 5, `followed the module graph (${seen.size} files)`);
  assert.ok(![...seen].some((f) => f.endsWith('/presence.js')), 'socket.io stays out of the entry point');
});
