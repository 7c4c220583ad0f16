// comet.js in headless Chromium against the real server: every transport,
// the fallback of 'auto' (WebSocket first) and its climb back, resume across a server
// restart, gaps, the subscription's own events kept apart from message
// types, liveness of silent connections, long polls cut short, publish(),
// tab sharing, and cross-origin pages allowed and refused.
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import {
  Comet,
  bufferingProxy,
  cometJs,
  dataDir,
  eventually,
  launch,
  pageAt,
  pageEventually,
  received,
  staticServer,
  subscribeIn,
  withTimeout,
} from './harness.mjs';

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

const FORCED = [
  ['ws', {}],
  ['sse', {}],
  ['stream', {}],
  ['stream', { streamVia: 'xhr' }],
  ['longpoll', {}],
  ['poll', { pollInterval: 50 }],
];

describe('every transport', () => {
  for (const [transport, extra] of FORCED) {
    const name = extra.streamVia ? `${transport} (XHR at readyState 3)` : transport;
    test(`${name} receives messages, custom types and multi-line data`, async () => {
      const comet = await Comet.start(['--data-dir', dataDir()]);
      try {
        const page = await cometPage(comet);
        await subscribeIn(page, 'a,b', { transport, ...extra }, { types: ['message', 'update'] });
        const ids = [];
        ids.push(await comet.publish('a', 'one'));
        ids.push(await comet.publish('b', 'two\nlines', 'update'));
        await comet.publish('c', 'not subscribed');
        ids.push(await comet.publish('a', '{"json": true}'));
        const got = await received(page, 3);
        assert.deepEqual(got, [
          { type: 'message', data: 'one', id: ids[0], channel: 'a' },
          { type: 'update', data: 'two\nlines', id: ids[1], channel: 'b' },
          { type: 'message', data: '{"json": true}', id: ids[2], channel: 'a' },
        ]);
        assert.deepEqual(await page.evaluate(() => window.transports), [transport]);
        assert.deepEqual(page.problems, []);
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }
});

describe("transport 'auto'", () => {
  test('uses WebSocket when the browser has it', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news');
      const id = await comet.publish('news', 'hi');
      assert.deepEqual((await received(page, 1))[0].id, id);
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws']);
      await comet.waitForMetric('comet_subscribers{transport="ws"} 1');
      assert.ok(await comet.metric('comet_subscribers{transport="sse"} 0'), 'no EventSource');
      assert.deepEqual(page.problems, []);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('uses SSE when WebSocket is removed', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const context = await browser.newContext();
      await context.addInitScript(() => delete window.WebSocket);
      const page = await cometPage(comet, context);
      await subscribeIn(page, 'news');
      const id = await comet.publish('news', 'hi');
      assert.deepEqual((await received(page, 1))[0].id, id);
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws', 'sse']);
      await context.close();
    } finally {
      await comet.stop();
    }
  });

  test('falls back to streaming when WebSocket and EventSource are removed, and to XHR without fetch streams', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      for (const removed of [['WebSocket', 'EventSource'], ['WebSocket', 'EventSource', 'ReadableStream']]) {
        const context = await browser.newContext();
        await context.addInitScript((names) => {
          for (const name of names) delete window[name];
        }, removed);
        const page = await cometPage(comet, context);
        await subscribeIn(page, 'news');
        const id = await comet.publish('news', `without ${removed.join(' and ')}`);
        const got = await received(page, 1);
        assert.equal(got[0].id, id);
        assert.deepEqual(await page.evaluate(() => window.transports), ['ws', 'sse', 'stream']);
        await context.close();
      }
    } finally {
      await comet.stop();
    }
  });

  test('falls back to long polling behind a proxy that buffers streams (and refuses WebSocket upgrades)', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    const proxy = await bufferingProxy(comet.base);
    try {
      const page = await pageAt(browser, `${proxy.origin}/healthz`);
      await subscribeIn(page, 'news', { openTimeout: 1000, longPollWait: 1000 });
      const id = await comet.publish('news', 'through the proxy');
      assert.equal((await received(page, 1))[0].id, id);
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws', 'sse', 'stream', 'longpoll']);
      await page.close();
    } finally {
      proxy.close();
      await comet.stop();
    }
  });

  test('falls back to long polling when neither streams nor XHR work', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const context = await browser.newContext();
      await context.addInitScript(() => {
        delete window.WebSocket;
        delete window.EventSource;
        delete window.ReadableStream;
        delete window.XMLHttpRequest;
      });
      const page = await cometPage(comet, context);
      await subscribeIn(page, 'news', { openTimeout: 1000 });
      const id = await comet.publish('news', 'by long poll');
      assert.equal((await received(page, 1))[0].id, id);
      const transports = await page.evaluate(() => window.transports);
      assert.deepEqual(transports, ['ws', 'sse', 'stream', 'longpoll']);
      await context.close();
    } finally {
      await comet.stop();
    }
  });
});

describe('resume', () => {
  for (const transport of ['auto', 'ws', 'sse', 'stream', 'longpoll', 'poll']) {
    test(`${transport}: a server restart loses nothing and duplicates nothing`, async () => {
      const comet = await Comet.start(['--data-dir', dataDir(), '--sse-retry', '100ms']);
      try {
        const page = await cometPage(comet);
        await subscribeIn(page, 'news,sport', { transport, retry: 100, pollInterval: 50 });
        const ids = [];
        for (const [channel, data] of [['news', 'n1'], ['sport', 's1'], ['news', 'n2']]) {
          ids.push(await comet.publish(channel, data));
        }
        await received(page, 3);
        await comet.restart('SIGKILL');
        for (const [channel, data] of [['sport', 's2'], ['news', 'n3'], ['sport', 's3']]) {
          ids.push(await comet.publish(channel, data));
        }
        const got = await received(page, 6);
        assert.deepEqual(
          got.map((message) => message.id),
          ids,
          'every message once, in order',
        );
        // Nothing more arrives: a seventh message would be a duplicate.
        const last = await comet.publish('news', 'after');
        const all = await received(page, 7);
        assert.equal(all.length, 7);
        assert.equal(all[6].id, last);
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }

  for (const transport of ['auto', 'sse']) {
    test(`${transport}: a gap is an event of its own`, async () => {
      const comet = await Comet.start(['--data-dir', dataDir(), '--retention-messages', '2']);
      try {
        const first = await comet.publish('news', '0');
        for (const data of ['1', '2', '3']) await comet.publish('news', data);
        const page = await cometPage(comet);
        await subscribeIn(page, 'news', { transport, since: first });
        const got = await received(page, 2);
        assert.deepEqual(got.map((message) => message.data), ['2', '3']);
        assert.deepEqual(await page.evaluate(() => window.gaps), [{ channel: 'news', reason: 'trimmed' }]);
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }
});

describe('life cycle', () => {
  test('close() stops everything', async () => {
    // Short heartbeats: the server notices a closed connection at its next write.
    const comet = await Comet.start(['--data-dir', dataDir(), '--heartbeat', '200ms']);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news');
      await comet.waitForMetric('comet_subscribers{transport="ws"} 1');
      await page.evaluate(() => window.sub.close());
      await comet.waitForMetric('comet_subscribers{transport="ws"} 0');
      assert.equal(await page.evaluate(() => window.sub.closed), true);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('a refusal that retrying cannot fix ends the subscription with an error', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { transport: 'stream', since: 'not-an-id' }, { wait: false });
      await page.waitForFunction(() => window.errors.length === 1, null, { timeout: 20000 });
      const [error] = await page.evaluate(() => window.errors);
      assert.match(error.message, /invalid_cursor/);
      assert.equal(error.status, 400);
      assert.equal(error.readyState, 2, 'CLOSED when the error is dispatched');
      assert.equal(await page.evaluate(() => window.sub.closed), true);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('tabs that share use one connection, and the next takes over', async () => {
    const comet = await Comet.start(['--data-dir', dataDir(), '--heartbeat', '200ms']);
    try {
      const context = await browser.newContext();
      const first = await cometPage(comet, context);
      const second = await cometPage(comet, context);
      await subscribeIn(first, 'news', { share: true, retry: 100 });
      // Resolves once the second tab receives through the first.
      await subscribeIn(second, 'news', { share: true, retry: 100 });
      const ids = [];
      for (const data of ['a', 'b', 'c']) ids.push(await comet.publish('news', data));
      for (const page of [first, second]) {
        assert.deepEqual((await received(page, 3)).map((m) => m.id), ids);
      }
      assert.ok(await comet.metric('comet_subscribers{transport="ws"} 1'), 'one connection for both tabs');
      // The connected tab goes away: the other connects, from its cursor.
      await first.close();
      for (const data of ['d', 'e']) ids.push(await comet.publish('news', data));
      assert.deepEqual((await received(second, 5)).map((m) => m.id), ids);
      await comet.waitForMetric('comet_subscribers{transport="ws"} 1');
      await context.close();
    } finally {
      await comet.stop();
    }
  });
});

describe('cross-origin pages', () => {
  test('an allowed origin subscribes; another is refused', async () => {
    const pages = await staticServer({
      '/page.html': ['text/html', '<!doctype html><title>elsewhere</title>'],
      '/comet.js': ['text/javascript', cometJs()],
    });
    const allowing = await Comet.start(['--data-dir', dataDir(), '--cors-origin', pages.origin]);
    const refusing = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await pageAt(browser, `${pages.origin}/page.html`);
      // Loaded from the Comet server itself, across origins.
      await subscribeIn(page, 'news', { server: allowing.base }, { module: `${allowing.base}/comet.js` });
      const id = await allowing.publish('news', 'across origins');
      assert.equal((await received(page, 1))[0].id, id);

      const refused = await pageAt(browser, `${pages.origin}/page.html`);
      const outcome = await refused.evaluate(async (server) => {
        try {
          await fetch(`${server}/poll/news`);
          return 'fetched';
        } catch (error) {
          return error.name;
        }
      }, refusing.base);
      assert.equal(outcome, 'TypeError', 'the browser blocks the answer');
      const direct = await fetch(`${refusing.base}/poll/news`, { headers: { origin: pages.origin } });
      assert.equal(direct.status, 403);
      assert.equal((await direct.json()).error, 'origin_not_allowed');

      // The refused page and a same-origin control both resume from before
      // the message: whatever the server lets through reaches them.
      const before = await refusing.publish('news', 'before');
      const control = await cometPage(refusing);
      await subscribeIn(control, 'news', { since: before });
      await subscribeIn(refused, 'news', { server: refusing.base, since: before, retry: 100, maxRetry: 200 }, { wait: false });
      // The browser hides a refused cross-origin answer (no status reaches
      // the page): to the client it is a connection that failed.
      await pageEventually(refused, () => window.errors.length >= 1, null, 'the refused connection to fail');
      const withheld = await refusing.publish('news', 'not for them');
      assert.equal((await received(control, 1))[0].id, withheld, 'the control receives it');
      // Asked again, from before the message, once it exists: still nothing.
      const asked = await refused.evaluate(() => window.sub.stats.requests);
      await pageEventually(refused, (n) => window.sub.stats.requests >= n + 2, asked, 'the refused page to ask again');
      assert.deepEqual(await refused.evaluate(() => window.received), []);
      assert.equal(await refused.evaluate(() => window.sub.stats.messages), 0);
      assert.equal(await refused.evaluate(() => window.sub.readyState), 0, 'never open: CONNECTING');
      for (const error of await refused.evaluate(() => window.errors)) {
        assert.deepEqual([error.readyState, error.status], [0, undefined], 'failed connections, retried');
      }
      await page.close();
      await refused.close();
      await control.close();
    } finally {
      await allowing.stop();
      await refusing.stop();
      pages.close();
    }
  });
});

describe('own events and message types', () => {
  for (const [transport, expected] of [
    ['auto', 'ws'],
    ['sse', 'sse'],
    ['stream', 'stream'],
    ['longpoll', 'longpoll'],
  ]) {
    test(`${transport}: messages of types gap and transport are messages; a gap is comet-gap; error is refused`, async () => {
      const comet = await Comet.start(['--data-dir', dataDir(), '--retention-messages', '2']);
      try {
        // History: the first two messages are trimmed away (a real gap),
        // the last two have the types gap and transport.
        const first = await comet.publish('news', 'trimmed 1');
        await comet.publish('news', 'trimmed 2');
        const ids = [await comet.publish('news', 'g1', 'gap'), await comet.publish('news', 't1', 'transport')];
        const page = await cometPage(comet);
        await subscribeIn(page, 'news', { transport, since: first }, { types: ['gap', 'transport', 'message'] });
        // The history is read after the stream opens: the next publish
        // (retention 2) would trim g1 away if it came first.
        await page.waitForFunction(() => window.received.length >= 2, null, { timeout: 20000 });
        ids.push(await comet.publish('news', 'g2', 'gap'));
        // Reserved types are refused by the server: nothing reaches anyone.
        for (const type of ['error', 'open', 'comet-gap', 'comet-transport']) {
          const { status, body } = await comet.publishAnswer('news', `typed ${type}`, type);
          assert.deepEqual([status, body.error], [400, 'reserved_event'], type);
        }
        ids.push(await comet.publish('news', 'last'));
        // 'last' comes after everything else: once it is there, all is.
        await page.waitForFunction(() => window.received.some((m) => m.data === 'last'), null, { timeout: 20000 });
        assert.deepEqual(await page.evaluate(() => window.received), [
          { type: 'gap', data: 'g1', id: ids[0], channel: 'news' },
          { type: 'transport', data: 't1', id: ids[1], channel: 'news' },
          { type: 'gap', data: 'g2', id: ids[2], channel: 'news' },
          { type: 'message', data: 'last', id: ids[3], channel: 'news' },
        ]);
        assert.deepEqual(await page.evaluate(() => window.gaps), [{ channel: 'news', reason: 'trimmed' }]);
        assert.deepEqual(await page.evaluate(() => window.transports), [expected]);
        assert.deepEqual(await page.evaluate(() => [window.sub.transport, window.sub.readyState]), [expected, 1]);
        assert.deepEqual(await page.evaluate(() => window.errors), [], 'no error event');
        assert.deepEqual(page.problems, []);
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }
});

describe('liveness', () => {
  for (const transport of ['ws', 'sse', 'stream']) {
    test(`${transport}: a connection that goes silent is dropped and resumed from the cursor`, async () => {
      const comet = await Comet.start(['--data-dir', dataDir(), '--heartbeat', '200ms']);
      try {
        const page = await cometPage(comet);
        await subscribeIn(page, 'news', { transport, idleTimeout: 1500, retry: 100 });
        const ids = [await comet.publish('news', 'before')];
        await received(page, 1);
        const requests = await page.evaluate(() => window.sub.stats.requests);
        // A stopped server keeps its sockets open: the connection is silent,
        // not closed. Heartbeats every 200 ms stop; after 1.5 s of silence
        // the client gives up on it.
        await comet.pause();
        try {
          await pageEventually(page, () => window.errors.length >= 1, null, 'the silent connection to be dropped');
        } finally {
          comet.resume();
        }
        ids.push(await comet.publish('news', 'after'));
        assert.deepEqual((await received(page, 2)).map((m) => m.id), ids);
        const errors = await page.evaluate(() => window.errors);
        assert.equal(errors[0].readyState, 0, 'CONNECTING while it reconnects');
        assert.match(errors[0].message, /nothing received for 1500 ms/);
        await pageEventually(page, () => window.sub.readyState === 1, null, 'OPEN again');
        assert.ok((await page.evaluate(() => window.sub.stats.requests)) > requests, 'over a new connection');
        assert.deepEqual(await page.evaluate(() => window.transports), [transport]);
        // Nothing twice: the next message is the third.
        ids.push(await comet.publish('news', 'later'));
        await page.waitForFunction(() => window.received.some((m) => m.data === 'later'), null, { timeout: 20000 });
        assert.deepEqual((await page.evaluate(() => window.received)).map((m) => m.id), ids);
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }
});

describe("'auto' comes back up", () => {
  // Short timeouts everywhere: a server that is down moves the subscription
  // down to short polling within a few seconds.
  const FAST = { retry: 100, maxRetry: 400, openTimeout: 1000, longPollWait: 1000, pollInterval: 200 };

  async function movedDownToPolling(comet, page) {
    await comet.stop('SIGKILL');
    await pageEventually(page, () => window.sub.transport === 'poll', null, 'the subscription to move down to short polling');
    await comet.startAgain();
  }

  test('after moving down, it climbs back to WebSocket every climbBackAfter, losing and repeating nothing', async () => {
    const comet = await Comet.start(['--data-dir', dataDir(), '--sse-retry', '100ms']);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { ...FAST, climbBackAfter: 1000 });
      const ids = [await comet.publish('news', 'one')];
      await received(page, 1);
      await movedDownToPolling(comet, page);
      ids.push(await comet.publish('news', 'two'));
      await pageEventually(
        page,
        () => window.sub.transport === 'ws' && window.sub.readyState === 1,
        null,
        'the subscription to be back on WebSocket',
      );
      ids.push(await comet.publish('news', 'three'));
      await page.waitForFunction(() => window.received.some((m) => m.data === 'three'), null, { timeout: 20000 });
      assert.deepEqual((await page.evaluate(() => window.received)).map((m) => m.id), ids, 'each once, in order');
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws', 'sse', 'stream', 'longpoll', 'poll', 'ws']);
      await comet.waitForMetric('comet_subscribers{transport="ws"} 1');
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test("after moving down, the browser's online event brings it back to WebSocket", async () => {
    const comet = await Comet.start(['--data-dir', dataDir(), '--sse-retry', '100ms']);
    const context = await browser.newContext();
    try {
      const page = await cometPage(comet, context);
      await subscribeIn(page, 'news', { ...FAST, climbBackAfter: 600000 });
      const ids = [await comet.publish('news', 'one')];
      await received(page, 1);
      await movedDownToPolling(comet, page);
      ids.push(await comet.publish('news', 'two'));
      await received(page, 2);
      await context.setOffline(true);
      await context.setOffline(false);
      await pageEventually(page, () => window.sub.transport === 'ws', null, 'the subscription to be back on WebSocket');
      ids.push(await comet.publish('news', 'three'));
      await page.waitForFunction(() => window.received.some((m) => m.data === 'three'), null, { timeout: 20000 });
      assert.deepEqual((await page.evaluate(() => window.received)).map((m) => m.id), ids, 'each once, in order');
      await context.close();
    } finally {
      await comet.stop();
    }
  });

  test('failures while the browser is offline do not move it down', async () => {
    const comet = await Comet.start(['--data-dir', dataDir(), '--sse-retry', '100ms']);
    const context = await browser.newContext();
    try {
      const page = await cometPage(comet, context);
      await subscribeIn(page, 'news', FAST);
      const ids = [await comet.publish('news', 'one')];
      await received(page, 1);
      const requests = await page.evaluate(() => window.sub.stats.requests);
      await context.setOffline(true);
      // The restart ends the open stream; every reconnection fails offline.
      await comet.restart('SIGKILL');
      ids.push(await comet.publish('news', 'while offline'));
      await pageEventually(page, (n) => window.sub.stats.requests >= n + 6, requests, 'six attempts while offline');
      assert.equal(await page.evaluate(() => window.sub.transport), 'ws', 'still on WebSocket while offline');
      await context.setOffline(false);
      ids.push(await comet.publish('news', 'back online'));
      await page.waitForFunction(() => window.received.some((m) => m.data === 'back online'), null, { timeout: 20000 });
      assert.deepEqual((await page.evaluate(() => window.received)).map((m) => m.id), ids, 'each once, in order');
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws']);
      await context.close();
    } finally {
      await comet.stop();
    }
  });
});

describe('a full server', () => {
  test("auto: 503 too_many_subscribers is retried on WebSocket, not a reason to move down", async () => {
    const comet = await Comet.start(['--data-dir', dataDir(), '--max-subscribers', '1', '--heartbeat', '200ms']);
    const holder = new AbortController();
    try {
      // One subscription fills the server.
      const held = await fetch(`${comet.base}/stream/other`, { signal: holder.signal });
      assert.equal(held.status, 200);
      const since = await comet.publish('news', 'zero');
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { since, retry: 100, maxRetry: 300 }, { wait: false });
      await pageEventually(page, () => window.sub.stats.requests >= 8, null, 'refused attempts');
      assert.equal(await page.evaluate(() => window.sub.transport), 'ws', 'still on WebSocket');
      assert.equal(await page.evaluate(() => window.sub.readyState), 0, 'CONNECTING meanwhile');
      holder.abort();
      await pageEventually(page, () => window.sub.readyState === 1, null, 'open once there is room');
      const id = await comet.publish('news', 'one');
      assert.equal((await received(page, 1))[0].id, id);
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws']);
      const errors = await page.evaluate(() => window.errors);
      assert.ok(errors.length >= 3, `${errors.length} error events`);
      for (const error of errors) assert.deepEqual([error.readyState, error.status], [0, undefined], error.message);
      assert.match(errors[0].message, /too_many_subscribers/);
      await page.close();
    } finally {
      holder.abort();
      await comet.stop();
    }
  });
});

describe('long polling', () => {
  test("polls cut short by the server's --max-wait back off instead of looping", async () => {
    const comet = await Comet.start(['--data-dir', dataDir(), '--max-wait', '100ms']);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { transport: 'longpoll' });
      const start = await page.evaluate(() => window.sub.stats.requests);
      // Measured over 3 s: without backing off, a poll every 100 ms is ~30.
      await delay(3000);
      const made = (await page.evaluate(() => window.sub.stats.requests)) - start;
      assert.ok(made >= 1 && made <= 5, `${made} requests in 3 s`);
      const id = await comet.publish('news', 'still delivered');
      assert.equal((await received(page, 1))[0].id, id);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('longPollWait is in milliseconds (the wait= query, in seconds)', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      const waits = [];
      page.on('request', (request) => {
        const wait = new URL(request.url()).searchParams.get('wait');
        if (wait !== null) waits.push(wait);
      });
      await subscribeIn(page, 'news', { transport: 'longpoll', longPollWait: 2000 });
      await eventually(() => waits.length > 0, 'a long poll');
      assert.deepEqual(waits, ['2']);
      await page.close();
    } finally {
      await comet.stop();
    }
  });
});

describe('publish()', () => {
  test('checks channel names and data, encodes the type, and reports HTTP errors with HttpError', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      const outcome = await page.evaluate(async () => {
        const comet = await import('/comet.js');
        const attempt = async (channel, data, options) => {
          try {
            await comet.publish(channel, data, options);
            return 'sent';
          } catch (error) {
            return error.name;
          }
        };
        const names = {};
        for (const name of ['a?event=x', '', 'x'.repeat(201), 'a/b', 'a b', 'é', 'a,b', '..', 'x'.repeat(200), 'A-z_0.9:@~']) {
          names[name.length > 20 ? `${name.length} bytes` : name] = await attempt(name, 'n');
        }
        names['(a number)'] = await attempt(42, 'n');
        const data = {};
        for (const [label, value] of [
          ['a Blob', new Blob(['x'])],
          ['an ArrayBuffer', new ArrayBuffer(4)],
          ['a Uint8Array', new Uint8Array(4)],
          ['a Date', new Date(0)],
          ['a Map', new Map()],
          ['undefined', undefined],
          ['NaN', NaN],
          ['a function', () => 1],
          ['a Blob inside', { file: new Blob(['x']) }],
          ['a class instance', new (class Point {})()],
        ]) {
          data[label] = await attempt('data', value);
        }
        let refusal = null;
        try {
          await comet.publish('news', 'x', { event: 'error' });
        } catch (error) {
          refusal = {
            isHttpError: typeof comet.HttpError === 'function' && error instanceof comet.HttpError,
            status: error.status,
            code: error.code,
            retryable: error.retryable,
          };
        }
        const aborted = new AbortController();
        aborted.abort();
        const abort = await attempt('data', 'x', { signal: aborted.signal });
        for (const value of ['{"as": "is"}', { a: [1, 'two', null, { b: true }], skipped: undefined }, [1, 2], 3.5, false, null]) {
          await comet.publish('data', value);
        }
        await comet.publish('types', 'x', { event: 'a b&c=d' });
        return { names, data, refusal, abort };
      });
      assert.deepEqual(outcome.names, {
        'a?event=x': 'TypeError',
        '': 'TypeError',
        '201 bytes': 'TypeError',
        'a/b': 'TypeError',
        'a b': 'TypeError',
        é: 'TypeError',
        'a,b': 'TypeError',
        '..': 'TypeError',
        '200 bytes': 'sent',
        'A-z_0.9:@~': 'sent',
        '(a number)': 'TypeError',
      });
      for (const [label, result] of Object.entries(outcome.data)) assert.equal(result, 'TypeError', label);
      assert.deepEqual(outcome.refusal, { isHttpError: true, status: 400, code: 'reserved_event', retryable: false });
      assert.equal(outcome.abort, 'AbortError');
      // Nothing refused reached the server: no channel `a`, and `data` holds
      // exactly what was sent as it should be.
      assert.equal((await fetch(`${comet.base}/channels/a`)).status, 404, 'no message was published to `a`');
      const stored = await (await fetch(`${comet.base}/poll/data?backlog=100`)).json();
      assert.deepEqual(
        stored.messages.map((m) => m.data),
        ['{"as": "is"}', '{"a":[1,"two",null,{"b":true}]}', '[1,2]', '3.5', 'false', 'null'],
      );
      const types = await (await fetch(`${comet.base}/poll/types?backlog=1`)).json();
      assert.equal(types.messages[0].event, 'a b&c=d');
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('gives up after its timeout', async () => {
    const comet = await Comet.start(['--data-dir', dataDir()]);
    try {
      const page = await cometPage(comet);
      await page.evaluate(() => import('/comet.js'));
      await comet.pause();
      try {
        const outcome = await withTimeout(
          page.evaluate(async () => {
            const { publish } = await import('/comet.js');
            const started = performance.now();
            try {
              await publish('slow', 'x', { timeout: 300 });
              return { result: 'sent' };
            } catch (error) {
              return { result: error.name, ms: performance.now() - started };
            }
          }),
          'the publish to time out',
          5000,
        );
        assert.equal(outcome.result, 'TimeoutError');
        assert.ok(outcome.ms >= 250 && outcome.ms < 3000, `gave up after ${outcome.ms} ms`);
      } finally {
        comet.resume();
      }
      await page.close();
    } finally {
      await comet.stop();
    }
  });
});
