// Tokens made by a third-party JWT library (npm `jose`), for checking that
// the server accepts what any back end would issue, for every algorithm.
//
//   node tests/clients/jose-tokens.mjs DIR SECRET_FILE
//
// Writes DIR/rs256.pem, DIR/es256.pem and DIR/eddsa.pem (public keys, SPKI
// PEM) and prints one JSON object: for each algorithm, a token granting
// subscribe to `news` and publish to `news` for ten minutes, and one
// expired a minute ago.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';

const [dir, secretFile] = process.argv.slice(2);
const secret = readFileSync(secretFile).toString('utf8').replace(/\r?\n$/, '');
const now = Math.floor(Date.now() / 1000);

async function sign(alg, key, exp) {
  return new SignJWT({ comet: { publish: ['news'], subscribe: ['news'] } })
    .setProtectedHeader({ alg })
    .setSubject('jose')
    .setIssuedAt(now)
    .setExpirationTime(exp)
    .sign(key);
}

const tokens = {};
tokens.HS256 = {
  valid: await sign('HS256', new TextEncoder().encode(secret), now + 600),
  expired: await sign('HS256', new TextEncoder().encode(secret), now - 60),
};
for (const [alg, file, options] of [
  ['RS256', 'rs256.pem', { modulusLength: 2048 }],
  ['ES256', 'es256.pem', {}],
  ['EdDSA', 'eddsa.pem', { crv: 'Ed25519' }],
]) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { ...options, extractable: true });
  writeFileSync(join(dir, file), await exportSPKI(publicKey));
  tokens[alg] = {
    valid: await sign(alg, privateKey, now + 600),
    expired: await sign(alg, privateKey, now - 60),
  };
}
console.log(JSON.stringify(tokens));
