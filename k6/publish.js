// Publishes to random `k6-<n>` users over POST /v1/publish at a constant
// arrival rate; run it beside streams.js.
//
//   HERALD_URL=http://127.0.0.1:8080 HERALD_SECRET=... USERS=1000 RATE=500 ./k6 run k6/publish.js
import http from "k6/http";
import { check } from "k6";
import { mintToken } from "./token.js";

const BASE = __ENV.HERALD_URL || "http://127.0.0.1:8080";
const USERS = Number(__ENV.USERS || 1000);

export const options = {
  scenarios: {
    publish: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE || 500),
      timeUnit: "1s",
      duration: __ENV.DURATION || "60s",
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: { "http_req_failed": ["rate==0"] },
};

export function setup() {
  return { token: mintToken(__ENV.HERALD_SECRET, "k6-publisher", { publisher: true }) };
}

export default function ({ token }) {
  const user = `k6-${1 + Math.floor(Math.random() * USERS)}`;
  const body = JSON.stringify({
    to: { users: [user] },
    notification: { type: "load.k6", title: "k6", data: { sent_ms: Date.now() } },
  });
  const response = http.post(`${BASE}/v1/publish`, body, {
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  check(response, { "accepted (202)": (r) => r.status === 202 });
}
