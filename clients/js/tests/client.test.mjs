// comet.js in headless Chromium against the real server: every transport,
// the fallback of 'auto', resume across a server restart, gaps, tab
// sharing, and cross-origin pages allowed and refused.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  Comet,
  bufferingProxy,
  cometJs,
  dataDir,
  launch,
  pageAt,
  received,
  staticServer,
  subscribeIn,
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
      const comet = await Comet.start(['--memory']);
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
  test('uses SSE when the browser has EventSource', async () => {
    const comet = await Comet.start(['--memory']);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news');
      const id = await comet.publish('news', 'hi');
      assert.deepEqual((await received(page, 1))[0].id, id);
      assert.deepEqual(await page.evaluate(() => window.transports), ['sse']);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('falls back to streaming when EventSource is removed, and to XHR without fetch streams', async () => {
    const comet = await Comet.start(['--memory']);
    try {
      for (const removed of [['EventSource'], ['EventSource', 'ReadableStream']]) {
        const context = await browser.newContext();
        await context.addInitScript((names) => {
          for (const name of names) delete window[name];
        }, removed);
        const page = await cometPage(comet, context);
        await subscribeIn(page, 'news');
        const id = await comet.publish('news', `without ${removed.join(' and ')}`);
        const got = await received(page, 1);
        assert.equal(got[0].id, id);
        assert.deepEqual(await page.evaluate(() => window.transports), ['sse', 'stream']);
        await context.close();
      }
    } finally {
      await comet.stop();
    }
  });

  test('falls back to long polling behind a proxy that buffers streams', async () => {
    const comet = await Comet.start(['--memory']);
    const proxy = await bufferingProxy(comet.base);
    try {
      const page = await pageAt(browser, `${proxy.origin}/healthz`);
      await subscribeIn(page, 'news', { openTimeout: 1000, longPollWait: 1 });
      const id = await comet.publish('news', 'through the proxy');
      assert.equal((await received(page, 1))[0].id, id);
      assert.deepEqual(await page.evaluate(() => window.transports), ['sse', 'stream', 'longpoll']);
      await page.close();
    } finally {
      proxy.close();
      await comet.stop();
    }
  });

  test('falls back to long polling when neither streams nor XHR work', async () => {
    const comet = await Comet.start(['--memory']);
    try {
      const context = await browser.newContext();
      await context.addInitScript(() => {
        delete window.EventSource;
        delete window.ReadableStream;
        delete window.XMLHttpRequest;
      });
      const page = await cometPage(comet, context);
      await subscribeIn(page, 'news', { openTimeout: 1000 });
      const id = await comet.publish('news', 'by long poll');
      assert.equal((await received(page, 1))[0].id, id);
      const transports = await page.evaluate(() => window.transports);
      assert.deepEqual(transports, ['sse', 'stream', 'longpoll']);
      await context.close();
    } finally {
      await comet.stop();
    }
  });
});

describe('resume', () => {
  for (const transport of ['auto', 'sse', 'stream', 'longpoll', 'poll']) {
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

  test('a gap is an event of its own', async () => {
    const comet = await Comet.start(['--memory', '--retention-messages', '2']);
    try {
      const first = await comet.publish('news', '0');
      for (const data of ['1', '2', '3']) await comet.publish('news', data);
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { since: first });
      const got = await received(page, 2);
      assert.deepEqual(got.map((message) => message.data), ['2', '3']);
      assert.deepEqual(await page.evaluate(() => window.gaps), [{ channel: 'news', reason: 'trimmed' }]);
      await page.close();
    } finally {
      await comet.stop();
    }
  });
});

describe('life cycle', () => {
  test('close() stops everything', async () => {
    // Short heartbeats: the server notices a closed connection at its next write.
    const comet = await Comet.start(['--memory', '--heartbeat', '200ms']);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news');
      await comet.waitForMetric('comet_subscribers{transport="sse"} 1');
      await page.evaluate(() => window.sub.close());
      await comet.waitForMetric('comet_subscribers{transport="sse"} 0');
      assert.equal(await page.evaluate(() => window.sub.closed), true);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('a refusal that retrying cannot fix ends the subscription with an error', async () => {
    const comet = await Comet.start(['--memory']);
    try {
      const page = await cometPage(comet);
      await subscribeIn(page, 'news', { transport: 'stream', since: 'not-an-id' }, { wait: false });
      await page.waitForFunction(() => window.errors.length === 1, null, { timeout: 20000 });
      const [message] = await page.evaluate(() => window.errors);
      assert.match(message, /invalid_cursor/);
      assert.equal(await page.evaluate(() => window.sub.closed), true);
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  test('tabs that share use one connection, and the next takes over', async () => {
    const comet = await Comet.start(['--memory', '--heartbeat', '200ms']);
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
      assert.ok(await comet.metric('comet_subscribers{transport="sse"} 1'), 'one connection for both tabs');
      // The connected tab goes away: the other connects, from its cursor.
      await first.close();
      for (const data of ['d', 'e']) ids.push(await comet.publish('news', data));
      assert.deepEqual((await received(second, 5)).map((m) => m.id), ids);
      await comet.waitForMetric('comet_subscribers{transport="sse"} 1');
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
    const allowing = await Comet.start(['--memory', '--cors-origin', pages.origin]);
    const refusing = await Comet.start(['--memory']);
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
      await subscribeIn(refused, 'news', { server: refusing.base }, { wait: false });
      await refusing.publish('news', 'not for them');
      assert.equal(await refused.evaluate(() => window.sub.stats.messages), 0);
      await page.close();
      await refused.close();
    } finally {
      await allowing.stop();
      await refusing.stop();
      pages.close();
    }
  });
});
