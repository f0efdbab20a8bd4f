// Holds one Herald SSE stream per VU (user `k6-<VU>`) and counts what
// arrives. Needs a k6 built with the xk6-sse extension (see k6/README.md).
//
//   HERALD_URL=http://127.0.0.1:8080 HERALD_SECRET=... ./k6 run --vus 1000 --duration 60s k6/streams.js
import sse from "k6/x/sse";
import { check } from "k6";
import { Counter, Trend } from "k6/metrics";
import { setTimeout } from "k6/timers";
import { mintToken } from "./token.js";

const BASE = __ENV.HERALD_URL || "http://127.0.0.1:8080";
const SECRET = __ENV.HERALD_SECRET;
// How long each VU keeps its stream open before it reconnects with its cursor.
const HOLD_MS = Number(__ENV.HOLD_MS || 30000);

const notifications = new Counter("herald_notifications");
const latency = new Trend("herald_publish_to_receipt_ms", true);

let lastEventId = "";

export default function () {
  const user = `k6-${__VU}`;
  const headers = { Authorization: `Bearer ${mintToken(SECRET, user)}` };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId; // resume exactly where we stopped
  const response = sse.open(`${BASE}/v1/events`, { method: "GET", headers }, (client) => {
    client.on("open", () => setTimeout(() => client.close(), HOLD_MS));
    client.on("event", (event) => {
      if (event.name !== "notification") return;
      lastEventId = event.id;
      notifications.add(1);
      const data = JSON.parse(event.data).data || {};
      if (data.sent_ms) latency.add(Date.now() - data.sent_ms);
    });
    client.on("error", (e) => console.log(`stream error: ${e.error()}`));
  });
  check(response, { "stream opened (200)": (r) => r && r.status === 200 });
}
