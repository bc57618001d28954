// Drives the official socket.io-client (unchanged, from npm) against a presence edge and
// checks the core contract: handshake auth, presence-update fan-out, user:status with ack,
// presence:query, disconnect -> offline, connect_error on a bad token.
//
// usage: node interop.mjs <edgeUrlA> <edgeUrlB> <transport: websocket|polling> <observerToken> <userToken> <userId>
import { io } from "socket.io-client";

const [urlA, urlB, transport, observerToken, userToken, userId] = process.argv.slice(2);
const options = (token) => ({
  transports: [transport],
  upgrade: false,
  reconnection: false,
  forceNew: true,
  auth: token === undefined ? {} : { token },
});

const deadline = setTimeout(() => fail("timed out after 20 s"), 20_000);
function fail(message) {
  console.error(`interop (${transport}) failed: ${message}`);
  process.exit(1);
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}

function update(socket, user, status) {
  return new Promise((resolve) => {
    const listener = (u) => {
      if (u.userId === user && u.status === status) {
        socket.off("presence-update", listener);
        resolve(u);
      }
    };
    socket.on("presence-update", listener);
  });
}

const observer = io(urlB, options(observerToken));
await connected(observer);
if (observer.io.engine.transport.name !== transport) fail(`observer is on ${observer.io.engine.transport.name}`);

const online = update(observer, userId, "online");
const user = io(urlA, options(userToken));
await connected(user);
await online;

user.emit("user:heartbeat");
const live = update(observer, userId, "live");
const ack = await user.timeout(5_000).emitWithAck("user:status", { status: "live", details: { title: "interop" } });
if (ack?.ok !== true) fail(`user:status ack ${JSON.stringify(ack)}`);
const liveUpdate = await live;
if (liveUpdate.details?.title !== "interop") fail(`live update without details: ${JSON.stringify(liveUpdate)}`);

const bad = await user.timeout(5_000).emitWithAck("user:status", { status: "away" });
if (bad?.ok !== false || !String(bad.error).includes("unknown status")) fail(`bad status ack ${JSON.stringify(bad)}`);

const query = await observer.timeout(5_000).emitWithAck("presence:query", { userIds: [userId] });
if (query?.presence?.[0]?.status !== "live") fail(`query ${JSON.stringify(query)}`);

const offline = update(observer, userId, "offline");
user.disconnect();
const offlineUpdate = await offline;
if (offlineUpdate.online !== false || typeof offlineUpdate.lastSeen !== "string") fail(`offline update ${JSON.stringify(offlineUpdate)}`);

const refused = io(urlA, options("not-a-token"));
const refusal = await connected(refused).then(() => null, (err) => err);
if (!refusal || !String(refusal.message).startsWith("invalid token")) fail(`bad token not refused: ${refusal}`);

observer.disconnect();
refused.close();
clearTimeout(deadline);
console.log(`interop (${transport}) ok`);
process.exit(0);
