// Delivery by interest with the official socket.io-client (unchanged, from npm), across two
// edges: subscriptions sockets hear only of the users they subscribed to (visibility
// applied), the limit and bad ids are refused, a batch socket gets coalesced frames, and a
// client that reconnects (to the other edge) with its cursor is told exactly what it missed.
//
// usage: node subscriptions.mjs <edgeUrlA> <edgeUrlB> <tokens as JSON {name: token}> <limit>
// Prints {"early": "<cursor>"} on success: a cursor from before any user connected.
import { io } from "socket.io-client";

const [urlA, urlB, tokensJson, limitArg] = process.argv.slice(2);
const tokens = JSON.parse(tokensJson);
const limit = Number(limitArg);

const deadline = setTimeout(() => fail("timed out after 60 s"), 60_000);
function fail(message) {
  console.error(`subscriptions failed: ${message}`);
  process.exit(1);
}
function check(ok, message) {
  if (!ok) fail(message);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const after = (a, b) => b === undefined || BigInt(a) > BigInt(b);

/** A socket of `name` on `url`, recording every update it receives and its newest cursor. */
async function open(name, url, auth = {}) {
  const socket = io(url, {
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    auth: { token: tokens[name], ...auth },
  });
  const client = { socket, updates: [], frames: [], cursor: undefined };
  const see = (cursor) => {
    check(typeof cursor === "string", `${name}: a frame without a cursor`);
    if (after(cursor, client.cursor)) client.cursor = cursor;
  };
  socket.on("presence-update", (u, cursor) => {
    see(cursor);
    client.updates.push(u);
  });
  socket.on("presence-updates", (entries, cursor) => {
    see(cursor);
    check(Array.isArray(entries), `${name}: presence-updates is not an array`);
    client.frames.push(entries);
    client.updates.push(...entries);
  });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (e) => reject(new Error(`${name}: ${e.message}`)));
  });
  // Heartbeats keep the user online (the deployment's timeout is short).
  socket.emit("user:heartbeat");
  const beat = setInterval(() => socket.connected && socket.emit("user:heartbeat"), 500);
  socket.on("disconnect", () => clearInterval(beat));
  return client;
}
const ask = async (client, event, payload) => {
  const ack = await client.socket.timeout(5_000).emitWithAck(event, payload);
  if (typeof ack?.cursor === "string" && after(ack.cursor, client.cursor)) client.cursor = ack.cursor;
  return ack;
};
async function until(what, ok, ms = 10_000, state = () => "") {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) fail(`${what}: not within ${ms} ms ${state()}`);
    await sleep(20);
  }
}
const seen = (client, user, status) => client.updates.some((u) => u.userId === user && u.status === status);
const users = (client) => [...new Set(client.updates.map((u) => u.userId))].sort();

// A female and a male viewer by subscriptions, on different edges; a batch viewer by broadcast.
const fatma = await open("fatma", urlA, { delivery: "subscriptions" });
const mehmet = await open("mehmet", urlB, { delivery: "subscriptions" });
const zeynep = await open("zeynep", urlA, { batch: true });

let ack = await ask(fatma, "presence:subscribe", { userIds: ["ali", "ayse"] });
check(ack?.ok === true && typeof ack.cursor === "string", `subscribe ack ${JSON.stringify(ack)}`);
check(
  JSON.stringify(ack.presence.map((p) => [p.userId, p.online, p.lastSeen])) === JSON.stringify([["ali", false, null], ["ayse", false, null]]),
  `never-seen users: ${JSON.stringify(ack.presence)}`,
);
const early = ack.cursor;
ack = await ask(mehmet, "presence:subscribe", { userIds: ["ali", "ayse"] });
check(ack?.ok === true, `mehmet subscribe ${JSON.stringify(ack)}`);

// Refusals: a broadcast socket cannot subscribe; malformed ids; past the limit (set unchanged).
ack = await ask(zeynep, "presence:subscribe", { userIds: ["ali"] });
check(ack?.ok === false && String(ack.error).includes("delivery"), `broadcast subscribe ${JSON.stringify(ack)}`);
ack = await ask(fatma, "presence:subscribe", { add: ["ok", 42] });
check(ack?.ok === false && String(ack.error).startsWith("add[1]"), `bad id ${JSON.stringify(ack)}`);
const many = Array.from({ length: limit + 1 }, (_, i) => `u${i}`);
ack = await ask(fatma, "presence:subscribe", { userIds: many });
check(ack?.ok === false && ack.error === "too_many_subscriptions" && ack.limit === limit, `limit ${JSON.stringify(ack)}`);
ack = await ask(fatma, "presence:subscribe", { since: "x", userIds: ["ali"] });
check(ack?.ok === false && String(ack.error).startsWith("since:"), `bad cursor ${JSON.stringify(ack)}`);

// ali (male), ayse (female) and can (male, subscribed by nobody) come online on edge B.
const ali = await open("ali", urlB);
const ayse = await open("ayse", urlB);
const can = await open("can", urlB);
await until("fatma hears of ali and ayse", () => seen(fatma, "ali", "online") && seen(fatma, "ayse", "online"));
await until("mehmet hears of ayse", () => seen(mehmet, "ayse", "online"));
await until("zeynep's frames name all three", () => ["ali", "ayse", "can"].every((u) => seen(zeynep, u, "online")));
await sleep(1_200); // every window open with the joins has closed
check(JSON.stringify(users(fatma)) === '["ali","ayse"]', `fatma heard of ${users(fatma)}`);
check(JSON.stringify(users(mehmet)) === '["ayse"]', `mehmet (male) heard of ${users(mehmet)}: men see only women`);
// While ali is online, mehmet's snapshot of him is that of a user never seen.
ack = await ask(mehmet, "presence:subscribe", { add: ["ali"] });
check(
  ack?.ok === true && JSON.stringify(ack.presence) === JSON.stringify([{ userId: "ali", status: "offline", online: false, lastSeen: null }]),
  `mehmet's snapshot of ali: ${JSON.stringify(ack)}`,
);

// Ten status changes of ayse within one window: one entry in zeynep's frames, the last status.
const framesBefore = zeynep.frames.length;
const statuses = ["live", "in_call", "live", "in_call", "live", "in_call", "live", "in_call", "live", "in_call"];
for (const status of statuses) {
  const r = await ayse.socket.timeout(5_000).emitWithAck("user:status", { status });
  check(r?.ok === true, `status ${JSON.stringify(r)}`);
}
await until("the batch of ayse's statuses", () => zeynep.frames.slice(framesBefore).some((f) => f.some((u) => u.userId === "ayse")));
await sleep(1_500); // past the window: a second frame naming ayse would have come by now
const ayseEntries = zeynep.frames.slice(framesBefore).flat().filter((u) => u.userId === "ayse");
check(ayseEntries.length === 1 && ayseEntries[0].status === "in_call", `ayse in zeynep's frames: ${JSON.stringify(ayseEntries)}`);
await until(
  "fatma hears the last status",
  () => fatma.updates.at(-1)?.userId === "ayse" && fatma.updates.at(-1)?.status === "in_call",
  10_000,
  () => JSON.stringify(fatma.updates.slice(-4)),
);

// fatma goes away; meanwhile ali leaves, ayse goes live, can leaves; she comes back on edge B.
const cursor = fatma.cursor;
const zMark = zeynep.updates.length;
fatma.socket.disconnect();
ali.socket.disconnect();
can.socket.disconnect();
check((await ayse.socket.timeout(5_000).emitWithAck("user:status", { status: "live" }))?.ok === true, "ayse live");
const since = (client, mark, user, status) => client.updates.slice(mark).some((u) => u.userId === user && u.status === status);
await until("zeynep hears of it all", () =>
  since(zeynep, zMark, "ali", "offline") && since(zeynep, zMark, "can", "offline") && since(zeynep, zMark, "ayse", "live"),
);
const back = await open("fatma", urlB, { delivery: "subscriptions" });
// Edge B has taken the changes in too (a query does not move the cursor).
for (let i = 0; ; i++) {
  const q = await back.socket.timeout(5_000).emitWithAck("presence:query", { userIds: ["ali", "ayse"] });
  if (q?.presence?.[0]?.online === false && q?.presence?.[1]?.status === "live") break;
  if (i > 250) fail(`edge B never took the changes in: ${JSON.stringify(q)}`);
  await sleep(20);
}
ack = await ask(back, "presence:subscribe", { userIds: ["ali", "ayse"], since: cursor });
check(ack?.ok === true && ack.full === undefined, `resubscribe ${JSON.stringify(ack)}`);
const missed = ack.presence.map((p) => [p.userId, p.status, p.online]).sort();
check(
  JSON.stringify(missed) === JSON.stringify([["ali", "offline", false], ["ayse", "live", true]]),
  `what fatma missed: ${JSON.stringify(ack.presence)}`,
);
// Nothing missed since that answer: the same cursor again answers nothing.
ack = await ask(back, "presence:subscribe", { userIds: ["ali", "ayse"], since: ack.cursor });
check(ack?.ok === true && ack.presence.length === 0, `nothing new: ${JSON.stringify(ack)}`);

// A broadcast client catches up too: zeynep's cursor, on the other edge, after ayse goes offline.
await sleep(1_500); // fatma's return reaches zeynep's frames: her cursor is past it
const zCursor = zeynep.cursor;
zeynep.socket.disconnect();
ayse.socket.disconnect();
const zBack = await open("zeynep", urlB);
const ayseOffline = async () => (await ask(zBack, "presence:query", { userIds: ["ayse"] }))?.presence?.[0]?.online === false;
for (let i = 0; !(await ayseOffline()); i++) {
  if (i > 250) fail("ayse's departure never reached edge B");
  await sleep(20);
}
ack = await ask(zBack, "presence:sync", { since: zCursor });
check(ack?.ok === true && ack.full === undefined, `sync ${JSON.stringify(ack)}`);
const synced = ack.presence.filter((p) => p.userId !== "zeynep").map((p) => [p.userId, p.online]);
check(JSON.stringify(synced) === JSON.stringify([["ayse", false]]), `zeynep missed: ${JSON.stringify(ack.presence)}`);

for (const c of [mehmet, back, zBack]) c.socket.disconnect();
clearTimeout(deadline);
console.log(JSON.stringify({ early }));
process.exit(0);
