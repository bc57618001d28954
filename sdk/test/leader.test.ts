import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChannelLeaderElection, LockLeaderElection, SoloElection, type LeaderElection } from '../src/leader.js';
import { ChannelHub, FakeClock, FakeLockManager, flush, type FakeChannel } from './fakes.js';

const LOCK = 'presence-active-users:shop-42';

/** Records the role changes of an election and the highest number of simultaneous leaders. */
class Watch {
  readonly changes = new Map<LeaderElection, boolean[]>();
  maxLeaders = 0;
  constructor(readonly elections: LeaderElection[]) {
    for (const e of elections) {
      this.changes.set(e, []);
      e.onChange((leading) => {
        this.changes.get(e)!.push(leading);
        this.maxLeaders = Math.max(this.maxLeaders, this.leaders().length);
      });
    }
  }
  leaders(): LeaderElection[] {
    return this.elections.filter((e) => e.isLeader());
  }
}

// ---------------------------------------------------------------------------------------------
// Web Locks
// ---------------------------------------------------------------------------------------------

test('locks: exactly one leader among three tabs, the others know they follow', async () => {
  const locks = new FakeLockManager();
  const tabs = [0, 1, 2].map(() => new LockLeaderElection(locks, LOCK));
  const watch = new Watch(tabs);
  for (const t of tabs) t.start();
  await flush();
  assert.deepEqual(watch.leaders(), [tabs[0]]);
  assert.deepEqual(watch.changes.get(tabs[0]), [true]);
  assert.deepEqual(watch.changes.get(tabs[1]), [false]);
  assert.deepEqual(watch.changes.get(tabs[2]), [false]);
  assert.equal(locks.waiting(LOCK), 2, 'the followers queue for the lock');
});

test('locks: releasing the leader hands over to the next tab, one at a time', async () => {
  const locks = new FakeLockManager();
  const tabs = [0, 1, 2].map(() => new LockLeaderElection(locks, LOCK));
  const watch = new Watch(tabs);
  for (const t of tabs) t.start();
  await flush();

  tabs[0]!.stop();
  await flush();
  assert.equal(tabs[0]!.isLeader(), false);
  assert.deepEqual(watch.leaders(), [tabs[1]]);
  assert.deepEqual(watch.changes.get(tabs[1]), [false, true]);
  assert.deepEqual(watch.changes.get(tabs[0]), [true], 'stop() does not notify');

  tabs[1]!.stop();
  await flush();
  assert.deepEqual(watch.leaders(), [tabs[2]]);
  assert.equal(watch.maxLeaders, 1);

  tabs[2]!.stop();
  await flush();
  assert.equal(locks.isHeld(LOCK), false, 'the last leader released the lock');
});

test('locks: a stopped follower leaves the queue and never leads', async () => {
  const locks = new FakeLockManager();
  const [a, b, c] = [0, 1, 2].map(() => new LockLeaderElection(locks, LOCK));
  const watch = new Watch([a!, b!, c!]);
  for (const t of [a!, b!, c!]) t.start();
  await flush();
  b!.stop();
  await flush();
  assert.equal(locks.waiting(LOCK), 1);
  a!.stop();
  await flush();
  assert.deepEqual(watch.leaders(), [c]);
  assert.deepEqual(watch.changes.get(b!), [false]);
});

test('locks: a tab can start again after stopping', async () => {
  const locks = new FakeLockManager();
  const a = new LockLeaderElection(locks, LOCK);
  const b = new LockLeaderElection(locks, LOCK);
  a.start();
  await flush();
  b.start();
  await flush();
  a.stop();
  await flush();
  assert.equal(b.isLeader(), true);
  a.start();
  await flush();
  assert.equal(a.isLeader(), false);
  b.stop();
  await flush();
  assert.equal(a.isLeader(), true);
});

// ---------------------------------------------------------------------------------------------
// BroadcastChannel fallback
// ---------------------------------------------------------------------------------------------

const HEARTBEAT = 1000;

function channelTabs(ids: string[]) {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const channels = new Map<string, FakeChannel>();
  const tabs = new Map<string, ChannelLeaderElection>();
  for (const id of ids) {
    const channel = hub.channel('presence-active-users:shop-42:election');
    channels.set(id, channel);
    tabs.set(id, new ChannelLeaderElection(channel, { tabId: id, heartbeatMs: HEARTBEAT, clock }));
  }
  const watch = new Watch([...tabs.values()]);
  const leaderIds = (): string[] => [...tabs].filter(([, t]) => t.isLeader()).map(([id]) => id);
  return { clock, hub, channels, tabs, watch, leaderIds };
}

test('channel: three tabs started together elect exactly one leader, the lowest id', () => {
  const { clock, tabs, watch, leaderIds } = channelTabs(['c', 'a', 'b']);
  for (const t of tabs.values()) t.start();
  clock.advanceSync(HEARTBEAT / 2);
  assert.deepEqual(leaderIds(), [], 'nobody leads before the startup timeout');
  clock.advanceSync(HEARTBEAT + HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);
  assert.equal(watch.maxLeaders, 1, 'never two leaders at once');
  // And it stays that way: the leader's heartbeats keep the others following.
  clock.advanceSync(20 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);
  assert.equal(tabs.get('b')!.currentLeader(), 'a');
  assert.equal(tabs.get('c')!.currentLeader(), 'a');
  assert.deepEqual(watch.changes.get(tabs.get('c')!), [false]);
});

test('channel: a tab that starts later follows the leader at once and never claims', () => {
  const { clock, tabs, watch, leaderIds, channels } = channelTabs(['b', 'a']);
  tabs.get('b')!.start();
  clock.advanceSync(5 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['b']);
  tabs.get('a')!.start();
  clock.advanceSync(1);
  assert.deepEqual(watch.changes.get(tabs.get('a')!), [false], 'answered by the leader right away');
  clock.advanceSync(10 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['b'], 'a lower id does not take over a healthy leader');
  const claims = channels.get('a')!.posted.filter((m) => (m as { type: string }).type === 'claim');
  assert.equal(claims.length, 0);
});

test('channel: a leader that resigns is replaced within one heartbeat', () => {
  const { clock, tabs, watch, leaderIds } = channelTabs(['a', 'b', 'c']);
  for (const t of tabs.values()) t.start();
  clock.advanceSync(5 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);
  tabs.get('a')!.stop();
  assert.deepEqual(leaderIds(), []);
  clock.advanceSync(HEARTBEAT);
  assert.deepEqual(leaderIds(), ['b']);
  assert.equal(watch.maxLeaders, 1);
  tabs.get('b')!.stop();
  clock.advanceSync(HEARTBEAT);
  assert.deepEqual(leaderIds(), ['c']);
});

test('channel: a silent leader is replaced after 3 heartbeats, and a returning one settles with the new', () => {
  const { clock, tabs, channels, leaderIds } = channelTabs(['a', 'b', 'c']);
  for (const t of tabs.values()) t.start();
  clock.advanceSync(5 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);

  // Align on a heartbeat of a, then freeze it: no resign, just silence.
  const posted = channels.get('a')!.posted.length;
  while (channels.get('a')!.posted.length === posted) clock.advanceSync(1);
  clock.advanceSync(1); // delivered
  channels.get('a')!.muted = true;

  clock.advanceSync(3 * HEARTBEAT - 10);
  assert.deepEqual(leaderIds(), ['a'], 'no takeover before 3 heartbeats of silence');
  clock.advanceSync(10 + HEARTBEAT / 2 + 1);
  assert.deepEqual(leaderIds().filter((id) => id !== 'a'), ['b'], 'b leads 3 heartbeats (+ the claim window) later');

  // a wakes up still believing it leads: the two leaders hear each other, the lowest id stays.
  channels.get('a')!.muted = false;
  clock.advanceSync(2 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);
  assert.equal(tabs.get('b')!.currentLeader(), 'a');
  assert.equal(tabs.get('c')!.currentLeader(), 'a');
  clock.advanceSync(10 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);
});

test('channel: competing claims settle on the lowest id without two leaders', () => {
  const { clock, tabs, watch, leaderIds } = channelTabs(['d', 'b', 'c', 'e']);
  for (const t of tabs.values()) t.start();
  clock.advanceSync(5 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['b']);
  // The leader resigns: d, c and e all claim at the same instant.
  tabs.get('b')!.stop();
  clock.advanceSync(HEARTBEAT);
  assert.deepEqual(leaderIds(), ['c']);
  assert.equal(watch.maxLeaders, 1);
  for (const id of ['d', 'e']) assert.equal(tabs.get(id)!.currentLeader(), 'c');
});

test('channel: ignores foreign messages and its own id', () => {
  const { clock, tabs, hub, leaderIds } = channelTabs(['a']);
  const intruder = hub.channel('presence-active-users:shop-42:election');
  tabs.get('a')!.start();
  intruder.postMessage({ kind: 'something-else', type: 'leader', tabId: 'z' });
  intruder.postMessage({ kind: 'presence-election', type: 'leader', tabId: 'a' });
  intruder.postMessage('noise');
  clock.advanceSync(3 * HEARTBEAT);
  assert.deepEqual(leaderIds(), ['a']);
});

test('solo: the only tab leads', () => {
  const solo = new SoloElection();
  const seen: boolean[] = [];
  solo.onChange((l) => seen.push(l));
  solo.start();
  assert.equal(solo.isLeader(), true);
  solo.stop();
  assert.equal(solo.isLeader(), false);
  assert.deepEqual(seen, [true]);
});
