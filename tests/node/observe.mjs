// A viewer on the official socket.io-client (unchanged, from npm) that prints every
// presence-update it receives as one JSON line, with the time it arrived (ms since the
// epoch), until its stdin closes. The first line is {"ready":true} once it is connected.
//
// usage: node observe.mjs <edgeUrl> <token>
import { io } from "socket.io-client";

const [url, token] = process.argv.slice(2);
const socket = io(url, {
  transports: ["websocket"],
  upgrade: false,
  reconnection: false,
  forceNew: true,
  auth: { token },
});
socket.on("presence-update", (u) => {
  console.log(JSON.stringify({ at: Date.now(), userId: u.userId, status: u.status, online: u.online }));
});
socket.on("connect", () => console.log(JSON.stringify({ ready: true })));
socket.on("connect_error", (err) => {
  console.error(`observer: connect_error ${err.message}`);
  process.exit(1);
});
socket.on("disconnect", (reason) => {
  console.error(`observer: disconnected (${reason})`);
  process.exit(2);
});
// Keep the viewer's own connection alive past any heartbeat timeout.
const beat = setInterval(() => socket.emit("user:heartbeat"), 1_000);
process.stdin.on("end", () => {
  clearInterval(beat);
  socket.disconnect();
  process.exit(0);
});
process.stdin.resume();
