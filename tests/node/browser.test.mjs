// The browser SDK (`sdk/`) and the dashboard in a real headless Chromium, against a running
// edge + aggregator. Run by `tests/tests/browser.rs`, which starts the deployment and passes:
//   EDGE_URL           the edge's public URL
//   SDK_DIST           the built SDK (`sdk/dist`)
//   SESSION_TTL_MS     the aggregator's session TTL (short, so a session nobody beats for ends)
//   USERS              [{id, token}] of three users who connect over Socket.io (dashboard test)
//   SERVICE_TOKEN      a service-role JWT for the dashboard
//   ARTIFACTS          where screenshots go
// Chromium is Debian's (`/usr/bin/chromium`, or CHROMIUM); nothing is downloaded.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const EDGE = process.env.EDGE_URL;
const SDK_DIST = process.env.SDK_DIST;
const TTL = Number(process.env.SESSION_TTL_MS);
const ARTIFACTS = process.env.ARTIFACTS;
assert.ok(EDGE && SDK_DIST && TTL && ARTIFACTS, "EDGE_URL, SDK_DIST, SESSION_TTL_MS and ARTIFACTS are required");

let browser;
let site; // the customer's site: another origin than the edge, as in production
let siteUrl;

// A customer's page embedding the widget. Options come from the query string.
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>shop</title></head>
<body><h1>People viewing: <span id="count">…</span></h1><p id="mode"></p>
<script type="module">
import { ActiveUsersClient } from "/sdk/active-users.js";
const q = new URLSearchParams(location.search);
const num = (k) => (q.has(k) ? Number(q.get(k)) : undefined);
const client = new ActiveUsersClient({
  customerId: q.get("customer"),
  apiUrl: q.get("api"),
  foregroundHeartbeatInterval: num("fg"),
  backgroundHeartbeatInterval: num("bg"),
  pollingInterval: num("poll"),
  websocketRetryInterval: num("retry"),
  maxWebSocketFailures: num("failures"),
  backoff: { initialMs: 100, maxMs: 1000, jitter: 0.2 },
});
window.client = client;
client.onMetrics((m) => { document.getElementById("count").textContent = String(m.count); });
client.init().then(() => { window.ready = true; });
</script></body></html>`;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // Hidden pages must keep their timers as a visible one would; the SDK chooses the pace.
      "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    ],
  });
  site = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://site");
    if (url.pathname === "/shop") {
      res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
      return;
    }
    if (url.pathname.startsWith("/sdk/")) {
      const file = path.join(SDK_DIST, path.normalize(url.pathname.slice(5)).replace(/^(\.\.[/\\])+/, ""));
      try {
        const body = await readFile(file);
        res.writeHead(200, { "content-type": "text/javascript" }).end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  siteUrl = `http://127.0.0.1:${site.address().port}`;
  await mkdir(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  site?.close();
});

function shopUrl(customer, options = {}) {
  const q = new URLSearchParams({ customer, api: EDGE, ...Object.fromEntries(Object.entries(options).map(([k, v]) => [k, String(v)])) });
  return `${siteUrl}/shop?${q}`;
}

async function serverCount(customer) {
  const res = await fetch(`${EDGE}/metrics?customerId=${customer}`);
  if (!res.ok) return null;
  return (await res.json()).count;
}

async function eventually(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) assert.fail(`${what}: not reached in ${timeoutMs} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function open(context, url) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  const pings = { count: 0 };
  page.on("websocket", (ws) => {
    ws.on("framesent", (f) => {
      if (typeof f.payload === "string" && f.payload.includes('"ping"')) pings.count++;
    });
  });
  await page.goto(url);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 15000 });
  return { page, pings };
}

const status = (page) => page.evaluate(() => window.client.getConnectionStatus());
const shown = (page) => page.locator("#count").textContent();

test("three tabs of one browser count once; closing the leader hands over the beats", async () => {
  const customer = "tabs-" + Date.now();
  const context = await browser.newContext();
  // Beats every second against a short session TTL: if nobody took over, the session would end.
  const url = shopUrl(customer, { fg: 1000, bg: 1000 });
  const tabs = [];
  for (let i = 0; i < 3; i++) tabs.push(await open(context, url));
  await eventually("count 1 on the server", async () => (await serverCount(customer)) === 1);
  for (const t of tabs) await eventually("each tab shows 1", async () => (await shown(t.page)) === "1");

  const statuses = await Promise.all(tabs.map((t) => status(t.page)));
  assert.equal(new Set(statuses.map((s) => s.sessionId)).size, 1, "one session id for all tabs");
  assert.equal(new Set(statuses.map((s) => s.tabId)).size, 3, "a tab id per tab");
  const leaders = statuses.flatMap((s, i) => (s.isLeader ? [i] : []));
  assert.equal(leaders.length, 1, `exactly one leader, got ${JSON.stringify(statuses)}`);
  const leader = tabs[leaders[0]];
  const followers = tabs.filter((t) => t !== leader);
  // Only the leader beats.
  const before = followers.map((t) => t.pings.count);
  await new Promise((r) => setTimeout(r, 2500));
  assert.ok(leader.pings.count >= 2, `the leader beats (${leader.pings.count} pings)`);
  assert.deepEqual(followers.map((t) => t.pings.count), before, "followers do not beat");

  await leader.page.close({ runBeforeUnload: true });
  const next = await eventually("another tab takes the lead", async () => {
    for (const t of followers) if ((await status(t.page)).isLeader) return t;
    return null;
  }, 5000);
  const pingsAtTakeover = next.pings.count;
  // Watch for three session TTLs: the count never drops, and the new leader beats.
  const until = Date.now() + 3 * TTL;
  const seen = new Set();
  while (Date.now() < until) {
    seen.add(await serverCount(customer));
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual([...seen], [1], "the count stayed 1 through the handover");
  assert.ok(next.pings.count > pingsAtTakeover, "the new leader beats");
  const others = followers.filter((t) => t !== next);
  for (const t of others) assert.equal((await status(t.page)).isLeader, false);
  await context.close();
  await eventually("all tabs closed: count 0", async () => (await serverCount(customer)) === 0);
});

test("two browsers count as two", async () => {
  const customer = "browsers-" + Date.now();
  const first = await browser.newContext();
  const second = await browser.newContext();
  const a = await open(first, shopUrl(customer));
  const b = await open(second, shopUrl(customer));
  await eventually("count 2 on the server", async () => (await serverCount(customer)) === 2);
  await eventually("both pages show 2", async () => (await shown(a.page)) === "2" && (await shown(b.page)) === "2");
  const [sa, sb] = [await status(a.page), await status(b.page)];
  assert.notEqual(sa.sessionId, sb.sessionId);
  assert.ok(sa.isLeader && sb.isLeader, "each browser has its own leader");
  await first.close();
  await second.close();
});

test("with the WebSocket blocked the SDK polls, and returns to the WebSocket once it works", async () => {
  const customer = "fallback-" + Date.now();
  const context = await browser.newContext();
  let blocked = true;
  let refused = 0;
  await context.routeWebSocket(/\/ws\/active-users/, (ws) => {
    if (blocked) {
      refused++;
      ws.close();
    } else {
      ws.connectToServer();
    }
  });
  const { page } = await open(context, shopUrl(customer, { failures: 2, poll: 500, retry: 1500, fg: 1000 }));
  await eventually("polling mode", async () => (await status(page)).mode === "polling");
  assert.ok(refused >= 2, `the WebSocket was tried (${refused} times)`);
  await eventually("counted while polling", async () => (await serverCount(customer)) === 1);
  await eventually("the page shows the count from polling", async () => (await shown(page)) === "1");
  // Beats over HTTP keep the session past its TTL.
  await new Promise((r) => setTimeout(r, TTL + 1000));
  assert.equal(await serverCount(customer), 1, "HTTP beats keep the session");

  blocked = false;
  await eventually("back to the WebSocket", async () => (await status(page)).mode === "websocket", 10000);
  assert.equal(await serverCount(customer), 1);
  await context.close();
});

test("a hidden page beats at the background interval", async () => {
  const customer = "hidden-" + Date.now();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.clock.install();
  const pings = { count: 0 };
  page.on("websocket", (ws) => ws.on("framesent", (f) => {
    if (typeof f.payload === "string" && f.payload.includes('"ping"')) pings.count++;
  }));
  await page.goto(shopUrl(customer, { fg: 30000, bg: 60000 }));
  await page.waitForFunction(() => window.ready === true, null, { timeout: 15000 });
  await eventually("connected", async () => (await status(page)).connected);
  await page.clock.pauseAt(Date.now() + 1000);
  assert.equal((await status(page)).heartbeatInterval, 30000);

  const visibleStart = pings.count;
  await page.clock.runFor(120_000);
  await eventually("foreground pings reach the socket", async () => pings.count - visibleStart >= 3, 3000);
  await new Promise((r) => setTimeout(r, 300));
  const visible = pings.count - visibleStart;

  await page.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  assert.equal((await status(page)).heartbeatInterval, 60000);
  await new Promise((r) => setTimeout(r, 200));
  const hiddenStart = pings.count;
  await page.clock.runFor(120_000);
  await new Promise((r) => setTimeout(r, 500));
  const hidden = pings.count - hiddenStart;
  assert.ok(visible >= 3 && visible <= 4, `3–4 beats in 2 minutes in the foreground, got ${visible}`);
  assert.ok(hidden >= 1 && hidden <= 2, `1–2 beats in 2 minutes hidden, got ${hidden}`);
  await context.close();
});

test("the dashboard shows counts and online users and updates live", async () => {
  const customer = "dashboard-" + Date.now();
  const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  const token = process.env.SERVICE_TOKEN;
  await context.addInitScript((t) => sessionStorage.setItem("presence:dashboard-token", t), token);
  const dash = await context.newPage();
  dash.on("pageerror", (e) => console.error("dashboard error:", e));
  await dash.goto(`${EDGE}/dashboard`);
  await eventually("the dashboard is live", async () => (await dash.locator("#state").textContent()) === "live");

  // A visitor on the customer's site: its card appears with the count.
  const visitors = [await browser.newContext(), await browser.newContext()];
  // Beating well within the deployment's short session TTL.
  await open(visitors[0], shopUrl(customer, { fg: 1000 }));
  const card = dash.locator(`[data-customer="${customer}"]`);
  await eventually("the customer's card shows 1", async () => (await card.locator(".count").textContent()) === "1");
  await eventually("the card draws the EMA", async () => (await card.locator("path.ema-line").count()) === 1);

  // Users connect over Socket.io (the SDK's presence helper over socket.io-client),
  // heartbeating well within the deployment's short timeout.
  const { connectPresence } = await import(pathToFileURL(path.join(SDK_DIST, "presence.js")).href);
  const people = JSON.parse(process.env.USERS);
  const clients = [];
  for (const { id, token } of people) {
    const client = connectPresence({ url: EDGE, token, transports: ["websocket"], heartbeatInterval: 400 });
    await client.ready();
    clients.push(client);
  }
  const row = (id) => dash.locator(`tr[data-user="default/${id}"]`);
  for (const { id } of people) {
    await eventually(`${id} is listed online`, async () => (await row(id).locator(".status").textContent()) === "online");
  }
  await clients[0].setStatus("live", { title: "Evening stream" });
  await eventually("the status turns live", async () => (await row(people[0].id).locator(".status").textContent()) === "live");
  await clients[1].setStatus("in_call");
  await eventually("the status turns in call", async () => (await row(people[1].id).locator(".status").textContent()) === "in call");

  // A second visitor: the count follows.
  await open(visitors[1], shopUrl(customer, { fg: 1000 }));
  await eventually("the customer's card shows 2", async () => (await card.locator(".count").textContent()) === "2");
  // A few ticks so the lines have some length, then the picture.
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await card.locator(".count").textContent(), "2");
  await dash.screenshot({ path: path.join(ARTIFACTS, "dashboard.png") });

  clients[2].disconnect();
  await eventually("a user who leaves leaves the list", async () => (await row(people[2].id).count()) === 0, 10000);
  for (const c of clients) c.disconnect();
  for (const v of visitors) await v.close();
  await context.close();
});
