import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectPresence, cursorAfter, type PresenceOptions, type PresenceUpdate } from '../src/presence.js';

type Handler = (...args: unknown[]) => void;

/** Enough of a socket.io-client Socket, driven from the test as the server. */
class FakeIoSocket {
  connected = false;
  readonly emitted: { event: string; args: unknown[] }[] = [];
  readonly acked: { event: string; payload: unknown; timeout: number }[] = [];
  ackReply: (event: string, payload: unknown) => unknown = () => ({ ok: true });
  disconnected = false;
  private readonly handlers = new Map<string, Set<Handler>>();

  on(event: string, fn: Handler): this {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)!.add(fn);
    return this;
  }
  once(event: string, fn: Handler): this {
    const wrapper: Handler = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    (wrapper as { inner?: Handler }).inner = fn;
    return this.on(event, wrapper);
  }
  off(event: string, fn: Handler): this {
    const set = this.handlers.get(event);
    if (!set) return this;
    for (const h of set) if (h === fn || (h as { inner?: Handler }).inner === fn) set.delete(h);
    return this;
  }
  emit(event: string, ...args: unknown[]): this {
    this.emitted.push({ event, args });
    return this;
  }
  timeout(ms: number) {
    return {
      emitWithAck: async (event: string, payload: unknown) => {
        this.acked.push({ event, payload, timeout: ms });
        return this.ackReply(event, payload);
      },
    };
  }
  disconnect(): this {
    this.disconnected = true;
    this.connected = false;
    this.fire('disconnect', 'io client disconnect');
    return this;
  }
  listenerCount(event: string): number {
    return this.handlers.get(event)?.size ?? 0;
  }
  // Server side.
  fire(event: string, ...args: unknown[]): void {
    if (event === 'connect') this.connected = true;
    for (const h of [...(this.handlers.get(event) ?? [])]) h(...args);
  }
  heartbeats(): number {
    return this.emitted.filter((e) => e.event === 'user:heartbeat').length;
  }
}

function fakeIo() {
  const calls: { url: string; opts: Record<string, unknown> }[] = [];
  const socket = new FakeIoSocket();
  const io = ((url: string, opts: Record<string, unknown>) => {
    calls.push({ url, opts });
    return socket;
  }) as unknown as NonNullable<PresenceOptions['io']>;
  return { io, socket, calls };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

test('connects with the token and heartbeats right after connect, then every interval', async () => {
  const { io, socket, calls } = fakeIo();
  const presence = connectPresence({ url: 'https://presence.example.com', token: 'jwt', heartbeatInterval: 20, transports: ['websocket'], io });
  assert.deepEqual(calls, [{ url: 'https://presence.example.com', opts: { auth: { token: 'jwt' }, transports: ['websocket'] } }]);
  assert.equal(presence.socket as unknown, socket);
  assert.equal(socket.heartbeats(), 0);
  socket.fire('connect');
  await presence.ready();
  assert.equal(socket.heartbeats(), 1);
  await sleep(75);
  assert.ok(socket.heartbeats() >= 3, `heartbeats: ${socket.heartbeats()}`);
  socket.fire('disconnect', 'transport close');
  const stopped = socket.heartbeats();
  await sleep(50);
  assert.equal(socket.heartbeats(), stopped, 'no heartbeats while disconnected');
  socket.fire('connect');
  assert.equal(socket.heartbeats(), stopped + 1, 'resumes on reconnect');
  presence.disconnect();
  const final = socket.heartbeats();
  await sleep(50);
  assert.equal(socket.heartbeats(), final);
  assert.equal(socket.disconnected, true);
});

test('ready rejects with the connect_error message', async () => {
  const { io, socket } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 'not-a-token', io });
  socket.fire('connect_error', new Error('invalid token: malformed'));
  await assert.rejects(presence.ready(), /^Error: invalid token: malformed$/);
});

test('setStatus sends user:status and rejects with the ack error', async () => {
  const { io, socket } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 't', io, ackTimeout: 1234 });
  await presence.setStatus('live', { title: 'hi' });
  await presence.setStatus('online');
  assert.deepEqual(socket.acked, [
    { event: 'user:status', payload: { status: 'live', details: { title: 'hi' } }, timeout: 1234 },
    { event: 'user:status', payload: { status: 'online' }, timeout: 1234 },
  ]);
  socket.ackReply = () => ({ ok: false, error: 'unknown status "away"' });
  await assert.rejects(presence.setStatus('in_call'), /unknown status "away"/);
  socket.ackReply = () => undefined;
  await assert.rejects(presence.setStatus('in_call'), /user:status failed/);
});

test('query returns the presence list of the ack', async () => {
  const { io, socket } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 't', io });
  const ali: PresenceUpdate = { userId: 'ali', status: 'live', online: true, lastSeen: null, details: { title: 'x' } };
  socket.ackReply = (event, payload) => {
    assert.equal(event, 'presence:query');
    assert.deepEqual(payload, { userIds: ['ali'] });
    return { ok: true, presence: [ali] };
  };
  assert.deepEqual(await presence.query(['ali']), [ali]);
  socket.ackReply = () => ({ ok: false, error: 'at most 500 userIds per query, got 501' });
  await assert.rejects(presence.query([]), /at most 500/);
});

test('onPresence delivers presence-update until unsubscribed', () => {
  const { io, socket } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 't', io });
  const seen: string[] = [];
  const off = presence.onPresence((u) => seen.push(`${u.userId}:${u.status}`));
  socket.fire('presence-update', { userId: 'ayse', status: 'online', online: true, lastSeen: null });
  off();
  socket.fire('presence-update', { userId: 'ayse', status: 'offline', online: false, lastSeen: '2026-01-11T10:30:45Z' });
  assert.deepEqual(seen, ['ayse:online']);
  presence.disconnect();
  assert.equal(socket.listenerCount('presence-update'), 0);
  assert.equal(socket.listenerCount('presence-updates'), 0);
});

const update = (userId: string, status: PresenceUpdate['status']): PresenceUpdate => ({
  userId,
  status,
  online: status !== 'offline',
  lastSeen: null,
});

test('subscriptions: the handshake asks for them, subscribe/add/remove change the set, batches reach onPresence', async () => {
  const { io, socket, calls } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 't', delivery: 'subscriptions', batch: true, io });
  assert.deepEqual(calls[0].opts, { auth: { token: 't', delivery: 'subscriptions', batch: true } });
  socket.ackReply = (event, payload) => {
    assert.equal(event, 'presence:subscribe');
    const p = payload as { userIds?: string[]; add?: string[] };
    const ids = p.userIds ?? p.add ?? [];
    return { ok: true, presence: ids.map((id) => update(id, 'online')), cursor: '9' };
  };
  socket.fire('connect');
  await presence.ready();
  assert.deepEqual((await presence.subscribe(['ali', 'ayse'])).map((u) => u.userId), ['ali', 'ayse']);
  assert.deepEqual((await presence.add(['can'])).map((u) => u.userId), ['can']);
  await presence.remove(['ali']);
  assert.deepEqual(
    socket.acked.map((a) => a.payload),
    [{ userIds: ['ali', 'ayse'] }, { add: ['can'] }, { remove: ['ali'] }],
  );
  assert.equal(presence.cursor, '9');
  const seen: string[] = [];
  presence.onPresence((u) => seen.push(`${u.userId}:${u.status}`));
  socket.fire('presence-updates', [update('ayse', 'live'), update('can', 'offline')], '12');
  socket.fire('presence-update', update('ayse', 'in_call'), '10');
  assert.deepEqual(seen, ['ayse:live', 'can:offline', 'ayse:in_call']);
  assert.equal(presence.cursor, '12', 'the newest cursor is kept, not the last one seen');
  socket.ackReply = () => ({ ok: false, error: 'too_many_subscriptions', limit: 1000 });
  await assert.rejects(presence.add(['x']), /too_many_subscriptions/);
  presence.disconnect();
});

test('after a reconnect a subscriptions client resubscribes its set with its last cursor', async () => {
  const { io, socket } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 't', delivery: 'subscriptions', io });
  socket.fire('connect');
  socket.ackReply = () => ({ ok: true, presence: [update('ayse', 'online')], cursor: '100' });
  await presence.subscribe(['ayse', 'ali']);
  socket.fire('presence-update', update('ali', 'online'), '120');
  const seen: string[] = [];
  presence.onPresence((u) => seen.push(`${u.userId}:${u.status}`));
  socket.fire('disconnect', 'transport close');
  socket.ackReply = () => ({ ok: true, presence: [update('ali', 'offline')], cursor: '130' });
  socket.fire('connect');
  await sleep(5);
  assert.deepEqual(socket.acked[socket.acked.length - 1]?.payload, { userIds: ['ayse', 'ali'], since: '120' });
  assert.deepEqual(seen, ['ali:offline'], 'only what was missed');
  assert.equal(presence.cursor, '130');
  // A cursor too old for the server: the whole set, handed over as the full state.
  const full: string[][] = [];
  presence.onFullState((p) => full.push(p.map((u) => u.userId)));
  socket.ackReply = () => ({ ok: true, full: true, presence: [update('ayse', 'offline'), update('ali', 'offline')], cursor: '500' });
  socket.fire('disconnect', 'transport close');
  socket.fire('connect');
  await sleep(5);
  assert.deepEqual(full, [['ayse', 'ali']]);
  assert.deepEqual(seen, ['ali:offline'], 'a full state is not replayed as updates');
  presence.disconnect();
});

test('a broadcast client catches up with presence:sync and its last cursor, or not at all without one', async () => {
  const { io, socket } = fakeIo();
  const presence = connectPresence({ url: 'http://x', token: 't', io });
  socket.fire('connect');
  socket.fire('disconnect', 'transport close');
  socket.fire('connect');
  await sleep(5);
  assert.equal(socket.acked.length, 0, 'no cursor yet: nothing to catch up from');
  socket.fire('presence-update', update('ayse', 'online'), '7');
  socket.ackReply = (event, payload) => {
    assert.equal(event, 'presence:sync');
    assert.deepEqual(payload, { since: '7' });
    return { ok: true, presence: [update('ayse', 'offline')], cursor: '8' };
  };
  const seen: string[] = [];
  presence.onPresence((u) => seen.push(`${u.userId}:${u.status}`));
  socket.fire('disconnect', 'transport close');
  socket.fire('connect');
  await sleep(5);
  assert.deepEqual(seen, ['ayse:offline']);
  assert.equal(presence.cursor, '8');
  presence.disconnect();
});

test('cursors compare as numbers of any length', () => {
  assert.equal(cursorAfter('10', '9'), true);
  assert.equal(cursorAfter('9', '10'), false);
  assert.equal(cursorAfter('123', '124'), false);
  assert.equal(cursorAfter('1', undefined), true);
});
