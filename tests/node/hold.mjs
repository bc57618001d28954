// Users held connected with the official socket.io-client (unchanged, from npm), for the
// liveness tests: each user connects to <url>, sends `user:heartbeat` every <heartbeatMs>
// (0: never), and, when its socket is closed by the server, reconnects to <fallbackUrl>
// after <reconnectDelayMs> ("-": stays away). Prints "ready" once every user is connected,
// then "back <user>" for each reconnection; runs until killed.
//
// usage: node hold.mjs <url> <fallbackUrl|-> <reconnectDelayMs> <heartbeatMs> <tokens as JSON {user: token}>
import { io } from "socket.io-client";

const [url, fallback, delayArg, heartbeatArg, tokensJson] = process.argv.slice(2);
const tokens = JSON.parse(tokensJson);
const delay = Number(delayArg);
const heartbeat = Number(heartbeatArg);

function open(user, target) {
  const socket = io(target, {
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    auth: { token: tokens[user] },
  });
  let timer;
  return new Promise((resolve, reject) => {
    socket.once("connect", () => {
      if (heartbeat > 0) timer = setInterval(() => socket.emit("user:heartbeat"), heartbeat);
      resolve(socket);
    });
    socket.once("connect_error", (e) => reject(new Error(`${user}: ${e.message}`)));
    socket.once("disconnect", () => {
      clearInterval(timer);
      if (fallback === "-" || target === fallback) return;
      setTimeout(async () => {
        try {
          await open(user, fallback);
          console.log(`back ${user}`);
        } catch (e) {
          console.error(`${user} could not reconnect: ${e.message}`);
          process.exit(1);
        }
      }, delay);
    });
  });
}

try {
  await Promise.all(Object.keys(tokens).map((user) => open(user, url)));
  console.log("ready");
} catch (e) {
  console.error(`hold failed: ${e.message}`);
  process.exit(1);
}
