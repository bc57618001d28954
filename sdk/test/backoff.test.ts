import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, DEFAULT_BACKOFF, backoffDelay } from '../src/backoff.js';

const noJitter = { initialMs: 500, maxMs: 30_000, jitter: 0 };

test('delays double from initialMs', () => {
  const delays = [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, noJitter));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16_000]);
});

test('delays are capped at maxMs, even for huge attempts', () => {
  assert.equal(backoffDelay(6, noJitter), 30_000);
  assert.equal(backoffDelay(50, noJitter), 30_000);
  assert.equal(backoffDelay(5000, noJitter), 30_000);
  assert.equal(backoffDelay(Number.POSITIVE_INFINITY, noJitter), 500, 'a non-finite attempt counts as the first');
  assert.equal(backoffDelay(-3, noJitter), 500);
});

test('jitter spreads the delay over base * [1 - jitter, 1 + jitter], never above maxMs', () => {
  const opts = { initialMs: 1000, maxMs: 30_000, jitter: 0.5 };
  assert.equal(backoffDelay(0, opts, () => 0), 500, 'lowest');
  assert.equal(backoffDelay(0, opts, () => 0.5), 1000, 'middle');
  assert.equal(backoffDelay(0, opts, () => 1), 1500, 'highest');
  assert.equal(backoffDelay(2, opts, () => 0.25), 3000);
  // At the cap the upper half of the jitter is cut off.
  assert.equal(backoffDelay(10, opts, () => 1), 30_000);
  assert.equal(backoffDelay(10, opts, () => 0), 15_000);
  for (let attempt = 0; attempt < 12; attempt++) {
    const base = Math.min(30_000, 1000 * 2 ** attempt);
    for (let i = 0; i <= 20; i++) {
      const d = backoffDelay(attempt, opts, () => i / 20);
      assert.ok(d >= base * 0.5 && d <= Math.min(30_000, base * 1.5), `attempt ${attempt}: ${d}`);
    }
  }
});

test('jitter outside [0, 1] is clamped', () => {
  assert.equal(backoffDelay(0, { initialMs: 1000, maxMs: 10_000, jitter: 3 }, () => 0), 0);
  assert.equal(backoffDelay(0, { initialMs: 1000, maxMs: 10_000, jitter: -1 }, () => 0), 1000);
});

test('Backoff hands out growing delays and starts over on reset', () => {
  const b = new Backoff(noJitter);
  assert.deepEqual([b.next(), b.next(), b.next()], [500, 1000, 2000]);
  assert.equal(b.attempts, 3);
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 500);
  for (let i = 0; i < 20; i++) b.next();
  assert.equal(b.next(), 30_000);
});

test('Backoff uses the injected random source', () => {
  const b = new Backoff(DEFAULT_BACKOFF, () => 1);
  assert.deepEqual([b.next(), b.next()], [750, 1500]);
});
