// Fakes of the browser APIs the SDK takes as parameters: a manual clock, an in-memory
// BroadcastChannel hub, a Web Locks manager, WebSockets and fetch.

import type { Clock, TimerHandle } from '../src/clock.js';
import type { SocketHandle, SocketHandlers, WebSocketFactory } from '../src/connection.js';
import type { FetchLike } from '../src/http.js';
import type { LockManagerLike, LockRequestOptions } from '../src/leader.js';

/** Lets pending promise callbacks run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

/** A clock that only moves when told to. Timers due at the same time run in creation order. */
export class FakeClock implements Clock {
  time = 1_000_000;
  private seq = 0;
  private readonly timers = new Map<number, Timer>();

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const seq = ++this.seq;
    this.timers.set(seq, { at: this.time + Math.max(0, ms), seq, fn });
    return seq;
  }

  clearTimeout(handle: TimerHandle): void {
    if (typeof handle === 'number') this.timers.delete(handle);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  private nextDue(until: number): Timer | undefined {
    let next: Timer | undefined;
    for (const t of this.timers.values()) {
      if (t.at > until) continue;
      if (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq)) next = t;
    }
    return next;
  }

  /** Moves time forward by `ms`, running every timer that falls due, synchronously. */
  advanceSync(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const next = this.nextDue(end);
      if (!next) break;
      this.timers.delete(next.seq);
      this.time = next.at;
      next.fn();
    }
    this.time = end;
  }

  /** Like advanceSync, letting promise callbacks run before and after every timer. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    await flush();
    for (;;) {
      const next = this.nextDue(end);
      if (!next) break;
      this.timers.delete(next.seq);
      this.time = next.at;
      next.fn();
      await flush();
    }
    this.time = end;
  }
}

type Listener = (event: { data: unknown }) => void;

/** BroadcastChannels of one browser. Messages are delivered asynchronously (a 0 ms timer). */
export class ChannelHub {
  private readonly channels = new Set<FakeChannel>();
  constructor(readonly clock: FakeClock) {}

  channel(name: string): FakeChannel {
    const channel = new FakeChannel(this, name);
    this.channels.add(channel);
    return channel;
  }

  /** @internal */
  deliver(from: FakeChannel, message: unknown): void {
    const data = JSON.stringify(message);
    for (const to of this.channels) {
      if (to === from || to.name !== from.name || to.closed) continue;
      this.clock.setTimeout(() => to.dispatch(JSON.parse(data)), 0);
    }
  }
}

export class FakeChannel {
  private readonly listeners = new Set<Listener>();
  closed = false;
  /** A muted channel neither sends nor receives: a frozen or hung tab. */
  muted = false;
  readonly posted: unknown[] = [];

  constructor(
    private readonly hub: ChannelHub,
    readonly name: string,
  ) {}

  postMessage(message: unknown): void {
    if (this.closed) throw new Error('InvalidStateError: channel closed');
    this.posted.push(message);
    if (!this.muted) this.hub.deliver(this, message);
  }

  addEventListener(_type: 'message', listener: Listener): void {
    this.listeners.add(listener);
  }

  removeEventListener(_type: 'message', listener: Listener): void {
    this.listeners.delete(listener);
  }

  close(): void {
    this.closed = true;
  }

  /** @internal */
  dispatch(data: unknown): void {
    if (this.closed || this.muted) return;
    for (const l of [...this.listeners]) l({ data });
  }
}

interface Waiter {
  grant(): void;
}

/** Exclusive Web Locks of one browser, granted in request order. */
export class FakeLockManager implements LockManagerLike {
  private readonly held = new Set<string>();
  private readonly queues = new Map<string, Waiter[]>();

  request(name: string, options: LockRequestOptions, callback: (lock: unknown) => unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const run = (lock: { name: string } | null): void => {
        // Like browsers, the callback runs asynchronously; the lock is held until its promise settles.
        void Promise.resolve()
          .then(() => callback(lock))
          .then(resolve, reject)
          .finally(() => {
            if (lock) this.release(name);
          });
      };
      if (options.signal?.aborted) {
        reject(new Error('AbortError'));
        return;
      }
      if (!this.held.has(name)) {
        this.held.add(name);
        run({ name });
        return;
      }
      if (options.ifAvailable) {
        run(null);
        return;
      }
      const queue = this.queues.get(name) ?? [];
      this.queues.set(name, queue);
      const waiter: Waiter = { grant: () => run({ name }) };
      queue.push(waiter);
      options.signal?.addEventListener('abort', () => {
        const i = queue.indexOf(waiter);
        if (i >= 0) {
          queue.splice(i, 1);
          reject(new Error('AbortError'));
        }
      });
    });
  }

  isHeld(name: string): boolean {
    return this.held.has(name);
  }

  waiting(name: string): number {
    return this.queues.get(name)?.length ?? 0;
  }

  private release(name: string): void {
    const next = this.queues.get(name)?.shift();
    if (next) next.grant();
    else this.held.delete(name);
  }
}

/** One WebSocket the code under test opened, driven from the test as the server. */
export class FakeSocket implements SocketHandle {
  readonly sent: Record<string, unknown>[] = [];
  closedByClient: number | null = null;

  constructor(
    readonly url: string,
    private readonly handlers: SocketHandlers,
  ) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    this.closedByClient = code ?? 1000;
  }

  // Server side.
  open(): void {
    this.handlers.onOpen();
  }
  frame(message: object): void {
    this.handlers.onMessage(JSON.stringify(message));
  }
  hello(): void {
    this.frame({ type: 'hello', timestamp: Date.now(), sessionId: 's' });
  }
  serverClose(code: number, reason = ''): void {
    this.handlers.onClose(code, reason);
  }
  sentOfType(type: string): Record<string, unknown>[] {
    return this.sent.filter((m) => m.type === type);
  }
}

export class FakeSockets {
  readonly all: FakeSocket[] = [];
  readonly factory: WebSocketFactory = (url, handlers) => {
    const socket = new FakeSocket(url, handlers);
    this.all.push(socket);
    return socket;
  };
  get last(): FakeSocket {
    const s = this.all[this.all.length - 1];
    if (!s) throw new Error('no socket opened');
    return s;
  }
}

export interface Request {
  url: string;
  method: string;
  body: Record<string, unknown> | null;
  keepalive: boolean;
  at: number;
}

export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** A fetch that records requests and answers with `respond` (200 `{"success":true}` by default). */
export class FakeFetch {
  readonly requests: Request[] = [];
  respond: (req: Request) => Reply | Promise<Reply> = () => ({ status: 200, body: { success: true } });

  constructor(private readonly clock: Clock) {}

  readonly fetch: FetchLike = async (url, init) => {
    const req: Request = {
      url,
      method: init?.method ?? 'GET',
      body: init?.body ? (JSON.parse(init.body) as Record<string, unknown>) : null,
      keepalive: init?.keepalive === true,
      at: this.clock.now(),
    };
    this.requests.push(req);
    const reply = await this.respond(req);
    if (reply.status === 0) throw new TypeError('Failed to fetch');
    const headers = new Map(Object.entries(reply.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    return {
      status: reply.status,
      headers: { get: (name: string) => headers.get(name.toLowerCase()) ?? null },
      json: async () => {
        if (reply.body === undefined) throw new SyntaxError('no body');
        return reply.body;
      },
    };
  };

  to(path: string): Request[] {
    return this.requests.filter((r) => new URL(r.url).pathname === path);
  }
}
