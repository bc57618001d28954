/**
 * A thin helper over the stock `socket.io-client` for the presence Socket.io API: it connects
 * with the token, keeps the connection alive with `user:heartbeat`, and wraps the acked
 * events (`user:status`, `presence:query`) in promises.
 *
 * ```ts
 * import { connectPresence } from '@presence/client/presence';
 * const presence = connectPresence({ url: 'https://presence.example.com', token });
 * presence.onPresence((u) => console.log(u.userId, u.status));
 * await presence.ready();
 * await presence.setStatus('live', { title: 'Friday stream' });
 * const [ali] = await presence.query(['ali']);
 * ```
 *
 * A screen that shows a list of profiles subscribes to those users only, and takes their
 * changes batched; after a reconnect it is told only what it missed (its last cursor):
 *
 * ```ts
 * const presence = connectPresence({ url, token, delivery: 'subscriptions', batch: true });
 * presence.onPresence((u) => render(u));
 * await presence.ready();
 * (await presence.subscribe(idsOnScreen)).forEach(render);
 * await presence.add(['new-profile']);
 * ```
 */

import { io as defaultIo, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';

export type { Socket } from 'socket.io-client';

/** What the server says about one user: the `presence-update` payload and each `presence:query` entry. */
export interface PresenceUpdate {
  userId: string;
  status: 'online' | 'offline' | 'live' | 'in_call';
  online: boolean;
  /** RFC 3339 time the user was last seen, or null if never. */
  lastSeen: string | null;
  /** Details of `live` / `in_call`. */
  details?: unknown;
}

export type SettableStatus = 'online' | 'live' | 'in_call';

/** How the socket receives presence: every user the caller may see, or only those it subscribed to. */
export type Delivery = 'broadcast' | 'subscriptions';

export interface PresenceOptions {
  /** The presence service, e.g. `https://presence.example.com`. */
  url: string;
  /** The JWT sent as `auth: {token}` in the handshake. */
  token: string;
  /** How often to send `user:heartbeat` while connected. Default 5000. */
  heartbeatInterval?: number;
  /** Engine.IO transports, e.g. `['websocket']`. Default: socket.io-client's (polling, then upgrade). */
  transports?: ('websocket' | 'polling')[];
  /** How long `setStatus` and `query` wait for the server's ack. Default 10000. */
  ackTimeout?: number;
  /** More socket.io-client options (`path`, `reconnection`, ...); `auth` and `transports` are set from the above. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
  /** The `io` function to use. Default: the one of `socket.io-client`. */
  io?: typeof defaultIo;
  /** `'subscriptions'`: only the users passed to `subscribe`/`add`. Default: the server's (`broadcast`). */
  delivery?: Delivery;
  /** Take changes coalesced into `presence-updates` frames (at most one per server window). */
  batch?: boolean;
  /**
   * Catch up after a reconnect with the last cursor (`presence:subscribe {userIds, since}` in
   * subscriptions mode, `presence:sync {since}` in broadcast). Default true.
   */
  catchUp?: boolean;
}

export interface PresenceClient {
  /** The underlying socket.io-client socket. */
  readonly socket: Socket;
  /** Resolves on the first `connect`; rejects with the `connect_error` message (e.g. `invalid token`) if that comes first. */
  ready(): Promise<void>;
  /** Calls `cb` on every `presence-update`. Returns an unsubscribe function. */
  onPresence(cb: (u: PresenceUpdate) => void): () => void;
  /** Sets this user's status; resolves once the server has stored it, rejects with the server's error otherwise. */
  setStatus(status: SettableStatus, details?: unknown): Promise<void>;
  /** The presence of each user asked for, in order (users the caller may not see are reported offline). */
  query(userIds: string[]): Promise<PresenceUpdate[]>;
  /** Subscriptions mode: these users become the socket's set; resolves with their presence. */
  subscribe(userIds: string[]): Promise<PresenceUpdate[]>;
  /** Subscriptions mode: these users join the set; resolves with their presence. */
  add(userIds: string[]): Promise<PresenceUpdate[]>;
  /** Subscriptions mode: these users leave the set. */
  remove(userIds: string[]): Promise<void>;
  /**
   * What changed since the last cursor (`full: false`), or the whole state (`full: true`: every
   * visible user online in broadcast mode, every subscribed user in subscriptions mode).
   */
  sync(): Promise<{ full: boolean; presence: PresenceUpdate[] }>;
  /** Calls `cb` when a catch-up answers with the whole state instead of the changes: replace the list with it. */
  onFullState(cb: (presence: PresenceUpdate[]) => void): () => void;
  /** The newest cursor received (acks, `presence-update`, `presence-updates`), if any. */
  readonly cursor: string | undefined;
  /** Stops the heartbeat and disconnects (the server marks the user offline once no socket is left). */
  disconnect(): void;
}

interface Ack {
  ok?: boolean;
  error?: string;
  presence?: PresenceUpdate[];
  cursor?: string;
  full?: boolean;
  limit?: number;
}

/** Whether cursor `a` is after `b` (decimal strings of any length). */
export function cursorAfter(a: string, b: string | undefined): boolean {
  if (b === undefined) return true;
  if (a.length !== b.length) return a.length > b.length;
  return a > b;
}

function checkAck(event: string, ack: unknown): Ack {
  const a = (typeof ack === 'object' && ack !== null ? ack : {}) as Ack;
  if (a.ok !== true) throw new Error(typeof a.error === 'string' ? a.error : `${event} failed`);
  return a;
}

export function connectPresence(opts: PresenceOptions): PresenceClient {
  const io = opts.io ?? defaultIo;
  const heartbeatInterval = opts.heartbeatInterval ?? 5000;
  const ackTimeout = opts.ackTimeout ?? 10_000;
  const auth: Record<string, unknown> = { token: opts.token };
  if (opts.delivery !== undefined) auth.delivery = opts.delivery;
  if (opts.batch !== undefined) auth.batch = opts.batch;
  const socketOptions: Partial<ManagerOptions & SocketOptions> = { ...opts.socketOptions, auth };
  if (opts.transports) socketOptions.transports = opts.transports;
  const socket = io(opts.url, socketOptions);

  let heartbeat: ReturnType<typeof setInterval> | undefined;
  const stopHeartbeat = (): void => {
    if (heartbeat !== undefined) clearInterval(heartbeat);
    heartbeat = undefined;
  };
  const onConnect = (): void => {
    stopHeartbeat();
    socket.emit('user:heartbeat');
    heartbeat = setInterval(() => {
      if (socket.connected) socket.emit('user:heartbeat');
    }, heartbeatInterval);
  };
  socket.on('connect', onConnect);
  socket.on('disconnect', stopHeartbeat);

  // Cursors, the subscribed set and what listens for updates.
  let cursor: string | undefined;
  const seeCursor = (c: unknown): void => {
    if (typeof c === 'string' && /^[0-9]+$/.test(c) && cursorAfter(c, cursor)) cursor = c;
  };
  const subscriptions = opts.delivery === 'subscriptions';
  const subscribed = new Set<string>();
  const listeners = new Set<(u: PresenceUpdate) => void>();
  const fullListeners = new Set<(p: PresenceUpdate[]) => void>();
  const deliver = (u: PresenceUpdate): void => {
    for (const l of [...listeners]) l(u);
  };
  const onUpdate = (u: PresenceUpdate, c?: unknown): void => {
    seeCursor(c);
    deliver(u);
  };
  const onUpdates = (updates: unknown, c?: unknown): void => {
    seeCursor(c);
    if (Array.isArray(updates)) for (const u of updates) deliver(u as PresenceUpdate);
  };
  socket.on('presence-update', onUpdate);
  socket.on('presence-updates', onUpdates);
  const ask = async (event: string, payload: unknown): Promise<Ack> => {
    const ack = checkAck(event, await socket.timeout(ackTimeout).emitWithAck(event, payload));
    seeCursor(ack.cursor);
    return ack;
  };
  const list = (ack: Ack): PresenceUpdate[] => (Array.isArray(ack.presence) ? ack.presence : []);
  const answer = (ack: Ack): { full: boolean; presence: PresenceUpdate[] } => {
    const presence = list(ack);
    if (ack.full === true) for (const l of [...fullListeners]) l(presence);
    else presence.forEach(deliver);
    return { full: ack.full === true, presence };
  };
  const sync = async (): Promise<{ full: boolean; presence: PresenceUpdate[] }> => {
    if (subscriptions) {
      const payload: Record<string, unknown> = { userIds: [...subscribed] };
      if (cursor !== undefined) payload.since = cursor;
      return answer(await ask('presence:subscribe', payload));
    }
    return answer(await ask('presence:sync', cursor === undefined ? {} : { since: cursor }));
  };
  // After a reconnect: only what was missed while away.
  let connectedBefore = false;
  socket.on('connect', () => {
    const again = connectedBefore;
    connectedBefore = true;
    if (!again || opts.catchUp === false || cursor === undefined) return;
    if (subscriptions && subscribed.size === 0) return;
    sync().catch(() => undefined);
  });

  const readyPromise = new Promise<void>((resolve, reject) => {
    if (socket.connected) {
      onConnect();
      resolve();
      return;
    }
    const onFirstConnect = (): void => {
      socket.off('connect_error', onFirstError);
      resolve();
    };
    const onFirstError = (err: Error): void => {
      socket.off('connect', onFirstConnect);
      reject(new Error(err && typeof err.message === 'string' ? err.message : String(err)));
    };
    socket.once('connect', onFirstConnect);
    socket.once('connect_error', onFirstError);
  });
  // ready() may never be called; a refused connection must not become an unhandled rejection.
  readyPromise.catch(() => undefined);

  return {
    socket,
    ready: () => readyPromise,
    get cursor() {
      return cursor;
    },
    onPresence(cb) {
      const listener = (u: PresenceUpdate): void => cb(u);
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    onFullState(cb) {
      const listener = (p: PresenceUpdate[]): void => cb(p);
      fullListeners.add(listener);
      return () => {
        fullListeners.delete(listener);
      };
    },
    async subscribe(userIds) {
      const ack = await ask('presence:subscribe', { userIds });
      subscribed.clear();
      userIds.forEach((u) => subscribed.add(u));
      return list(ack);
    },
    async add(userIds) {
      const ack = await ask('presence:subscribe', { add: userIds });
      userIds.forEach((u) => subscribed.add(u));
      return list(ack);
    },
    async remove(userIds) {
      await ask('presence:subscribe', { remove: userIds });
      userIds.forEach((u) => subscribed.delete(u));
    },
    sync,
    async setStatus(status, details) {
      const payload = details === undefined ? { status } : { status, details };
      checkAck('user:status', await socket.timeout(ackTimeout).emitWithAck('user:status', payload));
    },
    async query(userIds) {
      const ack = checkAck('presence:query', await socket.timeout(ackTimeout).emitWithAck('presence:query', { userIds }));
      return Array.isArray(ack.presence) ? ack.presence : [];
    },
    disconnect() {
      stopHeartbeat();
      socket.off('connect', onConnect);
      socket.off('disconnect', stopHeartbeat);
      socket.off('presence-update', onUpdate);
      socket.off('presence-updates', onUpdates);
      listeners.clear();
      fullListeners.clear();
      socket.disconnect();
    },
  };
}
