// Mints an HS256 JWT inside k6 (k6/crypto + k6/encoding), with the same
// claims as `herald token`: sub, exp, and scope "publish" for publishers.
import crypto from "k6/crypto";
import encoding from "k6/encoding";

export function mintToken(secret, sub, { ttlSeconds = 3600, publisher = false } = {}) {
  const header = encoding.b64encode(JSON.stringify({ alg: "HS256", typ: "JWT" }), "rawurl");
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds };
  if (publisher) claims.scope = "publish";
  const payload = encoding.b64encode(JSON.stringify(claims), "rawurl");
  const signature = crypto.hmac("sha256", secret, `${header}.${payload}`, "base64rawurl");
  return `${header}.${payload}.${signature}`;
}
