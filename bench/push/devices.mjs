// Makes the benchmark's devices: one browser push subscription per user,
// with a real P-256 key pair and auth secret, as PushManager.subscribe()
// would, and the private key the sink decrypts samples with.
//
//   node devices.mjs --users 1000 --sink-port PORT > devices.json
//
// Each: {name, user, endpoint, p256dh, auth, private_key} (keys base64url).

import crypto from 'node:crypto';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { users: { type: 'string' }, 'sink-port': { type: 'string' } } });
const devices = [];
for (let i = 1; i <= Number(args.users); i++) {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  devices.push({
    name: `u${i}`,
    user: `u${i}`,
    endpoint: `http://127.0.0.1:${args['sink-port']}/push/u${i}`,
    p256dh: ecdh.getPublicKey().toString('base64url'),
    auth: crypto.randomBytes(16).toString('base64url'),
    private_key: ecdh.getPrivateKey().toString('base64url'),
  });
}
process.stdout.write(JSON.stringify(devices));
