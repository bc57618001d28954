import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeartbeatScheduler } from '../src/heartbeat.js';
import { FakeClock } from './fakes.js';

function setup() {
  const clock = new FakeClock();
  const start = clock.now();
  const beats: number[] = [];
  let visible = true;
  const hb = new HeartbeatScheduler({
    foregroundMs: 30_000,
    backgroundMs: 60_000,
    clock,
    isVisible: () => visible,
    beat: () => beats.push(clock.now() - start),
  });
  const setVisible = (v: boolean): void => {
    visible = v;
    hb.visibilityChanged();
  };
  return { clock, hb, beats, setVisible };
}

test('beats every foreground interval while visible, the start counting as a beat', () => {
  const { clock, hb, beats } = setup();
  hb.start();
  clock.advanceSync(29_999);
  assert.deepEqual(beats, []);
  clock.advanceSync(90_001);
  assert.deepEqual(beats, [30_000, 60_000, 90_000, 120_000]);
  assert.equal(hb.interval(), 30_000);
});

test('hidden: the next beat moves to the background interval', () => {
  const { clock, hb, beats, setVisible } = setup();
  hb.start();
  clock.advanceSync(10_000);
  setVisible(false);
  assert.equal(hb.interval(), 60_000);
  clock.advanceSync(110_000);
  assert.deepEqual(beats, [60_000, 120_000]);
});

test('visible again: beats at once when the last beat is older than the foreground interval', () => {
  const { clock, hb, beats, setVisible } = setup();
  hb.start();
  setVisible(false);
  clock.advanceSync(100_000); // beat at 60 s; 40 s since
  assert.deepEqual(beats, [60_000]);
  setVisible(true);
  assert.deepEqual(beats, [60_000, 100_000]);
  clock.advanceSync(30_000);
  assert.deepEqual(beats, [60_000, 100_000, 130_000]);
});

test('visible again soon after a beat: no extra beat, the next one a foreground interval after the last', () => {
  const { clock, hb, beats, setVisible } = setup();
  hb.start();
  setVisible(false);
  clock.advanceSync(70_000); // beat at 60 s
  setVisible(true);
  assert.deepEqual(beats, [60_000]);
  clock.advanceSync(19_999);
  assert.deepEqual(beats, [60_000]);
  clock.advanceSync(1);
  assert.deepEqual(beats, [60_000, 90_000]);
});

test('stop cancels the pending beat and visibility changes no longer beat', () => {
  const { clock, hb, beats, setVisible } = setup();
  hb.start();
  clock.advanceSync(31_000);
  hb.stop();
  setVisible(false);
  setVisible(true);
  clock.advanceSync(600_000);
  assert.deepEqual(beats, [30_000]);
  assert.equal(clock.pendingTimers, 0);
});
