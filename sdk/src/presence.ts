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
  /** Stops the heartbeat and disconnects (the server marks the user offline once no socket is left). */
  disconnect(): void;
}

interface Ack {
  ok?: boolean;
  error?: string;
  presence?: PresenceUpdate[];
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
  const socketOptions: Partial<ManagerOptions & SocketOptions> = { ...opts.socketOptions, auth: { token: opts.token } };
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
    onPresence(cb) {
      const listener = (u: PresenceUpdate): void => cb(u);
      socket.on('presence-update', listener);
      return () => {
        socket.off('presence-update', listener);
      };
    },
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
      socket.disconnect();
    },
  };
}
