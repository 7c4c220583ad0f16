// The WebSocket transport (GET /ws/{channels}) in headless Chromium against
// the real server: the browser's own WebSocket (no client) receives what is
// published and resumes exactly with `since`, sees 1001 when the server
// shuts down and only 1006 for a refused handshake; comet.js over 'ws'
// delivers hundreds of messages exactly once, in order, across server
// restarts (killed, and shut down with 1001), and dispatches gaps as
// comet-gap; 'auto' picks WebSocket, leaves it at once for SSE behind a
// proxy that refuses upgrades (and after openTimeout behind one that
// swallows them), and is not held up by the browser's six HTTP/1.1
// connections per origin as SSE is. The time each transport takes to open
// and deliver is printed.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { Comet, dataDir, launch, pageAt, pageEventually, received, subscribeIn } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A page of the server's origin, ready to import /comet.js. */
async function cometPage(comet, context) {
  return pageAt(context ?? browser, `${comet.base}/healthz`);
}

/** Opens the browser's own WebSocket in `page` on `path` (relative to the
 * page) as `window[name]`, recording its frames in `window[name].got`
 * (text, as received) and its close in `window[name].closed`
 * ([code, reason]). Resolves once it is open (or closed). */
async function openSocket(page, name, path) {
  await page.evaluate(
    ({ name, path }) => {
      const url = new URL(path, location.href);
      url.protocol = 'ws:';
      const socket = new WebSocket(url);
      socket.got = [];
      socket.closed = null;
      socket.onmessage = (event) => socket.got.push(event.data);
      socket.onclose = (event) => (socket.closed = [event.code, event.reason]);
      window[name] = socket;
      return new Promise((resolve) => {
        socket.onopen = resolve;
        socket.addEventListener('close', resolve);
      });
    },
    { name, path },
  );
}

/** The frames `window[name]` received, once there are `count`, parsed. */
async function framesOf(page, name, count) {
  await pageEventually(page, ({ name, count }) => window[name].got.length >= count, { name, count }, `${count} frames`);
  return (await page.evaluate((name) => window[name].got, name)).map((text) => JSON.parse(text));
}

const HEARTBEAT = { heartbeat: true };

describe("the browser's own WebSocket", () => {
  test('receives what is published, one JSON object a text frame, and resumes exactly with since', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      await openSocket(page, 'first', '/ws/news,sport');
      const sent = [
        ['news', 'one', undefined],
        ['sport', 'two\nlines', 'score'],
        ['news', '{"json": true}', undefined],
      ];
      const ids = [];
      for (const [channel, data, event] of sent) ids.push(await comet.publish(channel, data, event));
      const frames = await framesOf(page, 'first', 4);
      // A heartbeat first thing after the upgrade, then each message as the
      // NDJSON transport's object, in order.
      assert.deepEqual(frames, [
        HEARTBEAT,
        ...sent.map(([channel, data, event], index) => ({ id: ids[index], channel, event: event ?? 'message', data })),
      ]);
      assert.equal((await page.evaluate(() => window.first.got))[0], '{"heartbeat":true}', 'exactly');
      await page.evaluate(() => window.first.close());

      // Published while nobody listens; resumed from the first message's id.
      ids.push(await comet.publish('sport', 'four'));
      ids.push(await comet.publish('news', 'five'));
      await openSocket(page, 'resumed', `/ws/news,sport?since=${encodeURIComponent(ids[0])}`);
      const resumed = await framesOf(page, 'resumed', 5);
      assert.deepEqual(resumed[0], HEARTBEAT);
      assert.deepEqual(
        resumed.slice(1).map((frame) => frame.id),
        ids.slice(1),
        'exactly what came after, in order',
      );
      // Nothing more: the next frame is the next message.
      ids.push(await comet.publish('news', 'six'));
      const more = await framesOf(page, 'resumed', 6);
      assert.equal(more[5].id, ids[5]);
      assert.equal((await page.evaluate(() => window.resumed.got)).length, 6);
      assert.deepEqual(page.problems, []);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('sees 1001 when the server shuts down, and only 1006 for a handshake the server refuses', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      await openSocket(page, 'socket', '/ws/news');
      await framesOf(page, 'socket', 1);
      await comet.stop('SIGTERM');
      await pageEventually(page, () => window.socket.closed !== null, null, 'the close');
      assert.deepEqual(await page.evaluate(() => window.socket.closed), [1001, 'shutting_down']);
      await comet.startAgain();

      // A cursor the server refuses: the browser is told nothing but 1006.
      await openSocket(page, 'refused', '/ws/news?since=not-an-id');
      assert.deepEqual(await page.evaluate(() => [window.refused.closed, window.refused.got]), [[1006, ''], []]);
      // The same request as a poll says why (what comet.js asks).
      const answer = await page.evaluate(async () => {
        const response = await fetch('/poll/news?since=not-an-id');
        return [response.status, (await response.json()).error];
      });
      assert.deepEqual(answer, [400, 'invalid_cursor']);
      await page.close();
    } finally {
      await comet.stop();
    }
  });
});

describe("comet.js over 'ws'", () => {
  test('hundreds of messages on two channels, each once and in order, across a kill and a shutdown (1001)', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news,sport', { transport: 'ws', retry: 100 });
      const ids = [];
      let n = 0;
      const burst = async (count) => {
        for (let i = 0; i < count; i += 1, n += 1) ids.push(await comet.publish(n % 3 ? 'news' : 'sport', `m${n}`));
      };
      await burst(150);
      await received(page, 50); // some delivered, the rest on its way
      await comet.restart('SIGKILL');
      await burst(150); // published while the client reconnects
      await received(page, 300);
      await comet.stop('SIGTERM'); // the server closes with 1001
      await comet.startAgain();
      await burst(150);
      await pageEventually(page, (count) => window.received.length >= count, ids.length, `${ids.length} messages`);
      const got = await page.evaluate(() => window.received);
      assert.deepEqual(
        got.map((message) => message.id),
        ids,
        'every message once, in order',
      );
      assert.deepEqual(
        got.map((message) => message.data),
        ids.map((_, index) => `m${index}`),
      );
      assert.equal(await page.evaluate(() => window.sub.cursor), ids.at(-1), 'the cursor is the last id');
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws']);
      assert.deepEqual(await page.evaluate(() => window.gaps), []);
      // Lost connections are errors with readyState CONNECTING; never CLOSED.
      const errors = await page.evaluate(() => window.errors);
      assert.ok(errors.length >= 2, `${errors.length} error events`);
      for (const error of errors) assert.equal(error.readyState, 0, error.message);
      assert.ok(errors.some((error) => /1001/.test(error.message)), 'the shutdown close is reported');
      await pageEventually(page, () => window.sub.readyState === 1, null, 'OPEN again');
      // Nothing more arrives: another message would be a duplicate.
      ids.push(await comet.publish('news', 'last'));
      await page.waitForFunction(() => window.received.some((m) => m.data === 'last'), null, { timeout: 20000 });
      assert.equal((await page.evaluate(() => window.received)).length, ids.length);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('gaps are comet-gap events: a resume point trimmed away, and a history reset', async () => {
    const comet = await Comet.start(['--memory', '--retention-messages', '3']);
    try {
      const first = await comet.publish('news', '0');
      for (const data of ['1', '2', '3', '4']) await comet.publish('news', data);
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { transport: 'ws', since: first, retry: 100 });
      const got = await received(page, 3);
      assert.deepEqual(got.map((message) => message.data), ['2', '3', '4']);
      assert.deepEqual(await page.evaluate(() => window.gaps), [{ channel: 'news', reason: 'trimmed' }]);
      // A memory store loses its history when the server restarts: the
      // resume point is of a history that is gone.
      await comet.restart('SIGKILL');
      await pageEventually(page, () => window.gaps.length >= 2, null, 'the reset gap');
      assert.deepEqual((await page.evaluate(() => window.gaps))[1], { channel: 'news', reason: 'reset' });
      await pageEventually(page, () => window.sub.readyState === 1, null, 'OPEN again');
      const after = await comet.publish('news', 'after the reset');
      const all = await received(page, 4);
      assert.equal(all[3].id, after);
      assert.equal(all.length, 4);
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws']);
      await page.close();
    } finally {
      await comet.stop();
    }
  });
});

/**
 * A proxy in front of `target` that passes HTTP through as it comes
 * (streams included) and meets WebSocket upgrades as some proxies do:
 * 'refuse' answers 403; 'swallow' never answers.
 */
async function upgradeBreakingProxy(target, mode) {
  const upstream = new URL(target);
  const server = createServer((incoming, outgoing) => {
    const forward = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: incoming.method, path: incoming.url, headers: incoming.headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode, answer.headers);
        answer.pipe(outgoing);
      },
    );
    forward.on('error', () => outgoing.destroy());
    incoming.pipe(forward);
  });
  const held = new Set();
  server.on('upgrade', (_request, socket) => {
    if (mode === 'refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    } else {
      held.add(socket);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      for (const socket of held) socket.destroy();
      server.closeAllConnections();
      server.close();
    },
  };
}

describe("'auto' and WebSocket", () => {
  for (const [mode, openTimeout] of [
    ['refuse', 10000],
    ['swallow', 1500],
  ]) {
    test(`behind a proxy that ${mode}s WebSocket upgrades: on SSE, having lost ${mode === 'refuse' ? 'a round trip' : 'openTimeout'}`, async () => {
      const comet = await Comet.start(['--data-dir', dataDir()]);
      const proxy = await upgradeBreakingProxy(comet.base, mode);
      try {
        const page = await pageAt(browser, `${proxy.origin}/healthz`);
        const started = Date.now();
        await subscribeIn(page, 'news', { openTimeout });
        const opened = Date.now() - started;
        const id = await comet.publish('news', 'through the proxy');
        assert.equal((await received(page, 1))[0].id, id);
        assert.deepEqual(await page.evaluate(() => window.transports), ['ws', 'sse']);
        const what = mode === 'refuse' ? 'refused' : 'swallowed';
        console.log(`figures: WebSocket upgrades ${what} by a proxy: 'auto' open on SSE after ${opened} ms (openTimeout ${openTimeout} ms)`);
        if (mode === 'refuse') assert.ok(opened < 3000, `open after ${opened} ms`);
        else assert.ok(opened >= openTimeout && opened < openTimeout + 3000, `open after ${opened} ms`);
        await page.close();
      } finally {
        proxy.close();
        await comet.stop();
      }
    });
  }

  test("eight subscriptions in one page: over WebSocket all open and the page still publishes; over SSE the browser's six HTTP/1.1 connections run out", async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const outcome = {};
      for (const transport of ['auto', 'sse']) {
        const page = await cometPage(comet);
        outcome[transport] = await page.evaluate(async (transport) => {
          const { subscribe, publish } = await import('/comet.js');
          const started = performance.now();
          const subs = [];
          for (let n = 0; n < 8; n += 1) subs.push(subscribe(`lane${n}`, { transport, openTimeout: 60000 }));
          const opened = () => subs.filter((sub) => sub.readyState === 1).length;
          // Until all eight are open, or for 5 s at most; then a second more.
          while (opened() < 8 && performance.now() - started < 5000) {
            await new Promise((resolve) => setTimeout(resolve, 25));
          }
          const ms = Math.round(performance.now() - started);
          await new Promise((resolve) => setTimeout(resolve, 1000));
          const open = opened();
          const transports = [...new Set(subs.map((sub) => sub.transport))];
          let published;
          try {
            await publish('lane0', 'from the page', { timeout: 1000 });
            published = 'published';
          } catch (error) {
            published = error.name;
          }
          for (const sub of subs) sub.close();
          return { open, transports, published, ms };
        }, transport);
        await page.close();
      }
      // ms: until all eight were open (auto), or until giving up at 5 s (SSE).
      console.log(`figures: eight subscriptions in one page: ${JSON.stringify(outcome)}`);
      assert.deepEqual(outcome.auto.transports, ['ws']);
      assert.equal(outcome.auto.open, 8, 'over WebSocket, all eight open');
      assert.equal(outcome.auto.published, 'published');
      assert.equal(outcome.sse.open, 6, 'over SSE, six: one HTTP/1.1 connection each');
      assert.equal(outcome.sse.published, 'TimeoutError', "the page's own publish waits for a connection");
    } finally {
      await comet.stop();
    }
  });

  test('figures: time to open and publish-to-arrival latency, per transport', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    try {
      const rows = [];
      for (const transport of ['auto', 'ws', 'sse', 'stream', 'longpoll']) {
        const opens = [];
        const latencies = [];
        let chosen;
        // Five subscriptions one after the other, ten messages each.
        for (let round = 0; round < 5; round += 1) {
          const page = await cometPage(comet);
          await page.evaluate(() => import('/comet.js'));
          const channel = `lat-${transport}-${round}`;
          const started = performance.now();
          await subscribeIn(page, channel, { transport });
          opens.push(performance.now() - started);
          for (let n = 0; n < 10; n += 1) {
            const sent = performance.now();
            await comet.publish(channel, String(n));
            await received(page, n + 1);
            latencies.push(performance.now() - sent);
          }
          chosen = await page.evaluate(() => window.sub.transport);
          await page.close();
        }
        rows.push({ transport, chosen, open: Math.round(median(opens)), latency: Math.round(median(latencies)) });
      }
      // Medians, in ms: subscribe() to open (the first short poll included),
      // and publish to arrival as seen from this process (each waited for).
      console.log(`figures (medians in ms, loopback, 5 subscriptions and 50 messages each): ${JSON.stringify(rows)}`);
      assert.equal(rows[0].chosen, 'ws', "'auto' picks WebSocket");
    } finally {
      await comet.stop();
    }
  });
});
