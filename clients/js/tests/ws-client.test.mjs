// The WebSocket transport with a maintained third-party client outside the
// browser, the npm `ws` package (installed from package.json by
// scripts/test.sh): text frames holding one JSON object each, a heartbeat
// first; an exact resume with `since` (several channels too) and `backlog`;
// 1001 at shutdown; 1003 for a client that sends data; the HTTP error a
// refused handshake gets instead of 101 (which browsers hide); and a JWT in
// the `token` query parameter, closed with 4401 at its expiry and resumed
// with a fresh one, losing nothing.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SignJWT } from 'jose';
import WebSocket from 'ws';

import { Comet, dataDir, eventually, withTimeout } from './harness.mjs';

/** A `ws` client on `path` of `comet`, recording its frames (`frames`:
 * parsed; `binary`: how many were not text) and its close (`closed`:
 * [code, reason]). `opened()` resolves once it is open; `refusal` once a
 * handshake is answered with anything but 101 ({status, body}). */
function connect(comet, path) {
  const socket = new WebSocket(`${comet.base.replace('http://', 'ws://')}${path}`);
  const client = { socket, frames: [], binary: 0, closed: null, error: null };
  socket.on('message', (data, isBinary) => {
    if (isBinary) client.binary += 1;
    else client.frames.push(JSON.parse(String(data)));
  });
  socket.on('close', (code, reason) => (client.closed = [code, String(reason)]));
  socket.on('error', (error) => (client.error = error));
  client.opened = () =>
    socket.readyState === WebSocket.OPEN ? Promise.resolve() : withTimeout(once(socket, 'open'), `${path} to open`);
  client.refusal = new Promise((resolve) => {
    socket.on('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode, body: JSON.parse(body) }));
    });
  });
  client.messages = () => client.frames.filter((frame) => frame.id !== undefined);
  client.waitFor = (count, what = `${count} messages`) => eventually(() => client.messages().length >= count, what);
  client.waitClosed = () => eventually(() => client.closed !== null, 'the close');
  return client;
}

test('frames, an exact resume with since (one channel and several) and backlog', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    const live = connect(comet, '/ws/news');
    await live.opened();
    await eventually(() => live.frames.length >= 1, 'the first heartbeat');
    assert.deepEqual(live.frames[0], { heartbeat: true });
    const ids = [];
    for (const data of ['one', 'two\nlines', 'three']) ids.push(await comet.publish('news', data));
    await live.waitFor(3);
    assert.deepEqual(
      live.messages(),
      ['one', 'two\nlines', 'three'].map((data, index) => ({ id: ids[index], channel: 'news', event: 'message', data })),
    );
    assert.equal(live.binary, 0, 'text frames only');
    live.socket.close();
    await live.waitClosed();

    // Resumed after the first message: exactly the rest, then what comes next.
    ids.push(await comet.publish('news', 'four'));
    const resumed = connect(comet, `/ws/news?since=${encodeURIComponent(ids[0])}`);
    await resumed.waitFor(3);
    ids.push(await comet.publish('news', 'five'));
    await resumed.waitFor(4);
    assert.deepEqual(resumed.messages().map((m) => m.id), ids.slice(1));
    resumed.socket.close();

    // Several channels: each id is a cursor for both.
    const both = connect(comet, '/ws/news,sport');
    await both.opened();
    const cursors = [];
    for (const [channel, data] of [['sport', 's1'], ['news', 'n6'], ['sport', 's2']]) {
      await comet.publish(channel, data);
      await both.waitFor(cursors.length + 1);
      cursors.push(both.messages().at(-1).id);
    }
    both.socket.close();
    const again = connect(comet, `/ws/news,sport?since=${encodeURIComponent(cursors[0])}`);
    await again.waitFor(2);
    assert.deepEqual(again.messages().map((m) => m.id), cursors.slice(1));
    again.socket.close();

    // backlog=2, not resuming: the last two retained of each channel.
    const backlog = connect(comet, '/ws/news?backlog=2');
    await backlog.waitFor(2);
    assert.deepEqual(backlog.messages().map((m) => m.data), ['five', 'n6']);
    backlog.socket.close();
  } finally {
    await comet.stop();
  }
});

test('closes: 1001 at shutdown (then resumed exactly), 1003 for a client that sends data', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    const client = connect(comet, '/ws/news');
    await client.opened();
    const ids = [await comet.publish('news', 'before')];
    await client.waitFor(1);
    await comet.stop('SIGTERM');
    await client.waitClosed();
    assert.deepEqual(client.closed, [1001, 'shutting_down']);
    await comet.startAgain();
    ids.push(await comet.publish('news', 'after'));
    const resumed = connect(comet, `/ws/news?since=${encodeURIComponent(client.messages().at(-1).id)}`);
    await resumed.waitFor(1);
    assert.deepEqual(resumed.messages().map((m) => m.id), ids.slice(1));
    resumed.socket.close();

    const talker = connect(comet, '/ws/news');
    await talker.opened();
    talker.socket.send('hello');
    await talker.waitClosed();
    assert.equal(talker.closed[0], 1003, 'receive-only');
  } finally {
    await comet.stop();
  }
});

test('a refused handshake is the HTTP error of the other transports, not a 101', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    for (const [path, status, code] of [
      ['/ws/news?since=not-an-id', 400, 'invalid_cursor'],
      ['/ws/bad%20name', 400, null],
      [`/ws/${Array.from({ length: 33 }, (_, n) => `c${n}`).join(',')}`, 400, 'too_many_channels'],
    ]) {
      const client = connect(comet, path);
      const refusal = await withTimeout(client.refusal, `${path} to be refused`);
      assert.equal(refusal.status, status, path);
      if (code) assert.equal(refusal.body.error, code, path);
      assert.equal(typeof refusal.body.message, 'string');
    }
  } finally {
    await comet.stop();
  }
});

test('a 2-second JWT in the token parameter: 4401 at its expiry, resumed with a fresh one and since, nothing lost', async () => {
  const dir = dataDir();
  const secret = randomBytes(32).toString('hex');
  writeFileSync(join(dir, 'jwt-secret'), secret);
  const key = `publisher-${randomBytes(12).toString('hex')}`;
  writeFileSync(join(dir, 'api-keys'), `${key}\n`);
  const comet = await Comet.start(['--data-dir', join(dir, 'data'), '--jwt-secret-file', join(dir, 'jwt-secret'), '--api-keys-file', join(dir, 'api-keys')]);
  const mint = () =>
    new SignJWT({ comet: { subscribe: ['news'] } })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setJti(randomUUID())
      .setExpirationTime(Math.floor(Date.now() / 1000) + 2)
      .sign(new TextEncoder().encode(secret));
  const publish = async (data) => {
    const response = await fetch(`${comet.base}/pub/news`, { method: 'POST', body: data, headers: { authorization: `Bearer ${key}` } });
    assert.equal(response.status, 201);
    return (await response.json()).id;
  };
  try {
    const refused = connect(comet, '/ws/news');
    assert.equal((await withTimeout(refused.refusal, 'the refusal')).status, 401, 'no token: 401');

    const ids = [await publish('zero')];
    let since = ids[0];
    const received = [];
    const closes = [];
    // Three tokens in a row, a message published while each is in use.
    for (let round = 1; round <= 3; round += 1) {
      const client = connect(comet, `/ws/news?since=${encodeURIComponent(since)}&token=${await mint()}`);
      await client.opened();
      ids.push(await publish(`during token ${round}`));
      await client.waitClosed(); // at the token's expiry
      closes.push(client.closed);
      received.push(...client.messages().map((m) => m.id));
      since = received.at(-1) ?? since;
      ids.push(await publish(`between tokens ${round}`)); // published with no connection open
    }
    const last = connect(comet, `/ws/news?since=${encodeURIComponent(since)}&token=${await mint()}`);
    await last.waitFor(1);
    received.push(...last.messages().map((m) => m.id));
    last.socket.close();
    assert.deepEqual(closes, [
      [4401, 'token_expired'],
      [4401, 'token_expired'],
      [4401, 'token_expired'],
    ]);
    assert.deepEqual(received, ids.slice(1), 'every message once, in order');
  } finally {
    await comet.stop();
  }
});
