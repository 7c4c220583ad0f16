// A subscription as a drop-in for EventSource: code written for the
// browser's own EventSource (handler properties, readyState checks, the
// constants, close()) runs first on an EventSource, as the reference, and
// at the same time on subscribe(), against the same real server; both must
// see the same things.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Comet, dataDir, launch, pageAt, pageEventually } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

// Code written for EventSource, as a page would have it. Runs in the page
// on `connect`, the object under test, and records in window.log what it
// sees. The same source runs on both.
function eventSourceStyle(connect) {
  const log = (...entry) => window.log.push(entry);
  window.log = [];
  window.connect = connect;
  log(
    'constructed',
    connect.readyState === connect.CONNECTING,
    [connect.CONNECTING, connect.OPEN, connect.CLOSED],
    [connect.constructor.CONNECTING, connect.constructor.OPEN, connect.constructor.CLOSED],
    connect.url.split('?')[0],
    connect.withCredentials,
    [connect.onopen, connect.onmessage, connect.onerror],
  );
  connect.onmessage = () => log('a replaced handler was called');
  connect.onopen = function () {
    log('open', this === connect, connect.readyState === connect.OPEN);
  };
  connect.onmessage = (e) => log('message', e.data, e.lastEventId, e.origin, connect.readyState);
  connect.onerror = () => {
    if (connect.readyState === connect.CLOSED) log('error: gave up');
    else if (connect.readyState === connect.CONNECTING) log('error: reconnecting');
    else log('error while open?');
  };
  connect.addEventListener('update', (e) => log('update', e.data));
  log('handlers set', typeof connect.onopen, typeof connect.onmessage, typeof connect.onerror);
}

// Starts `eventSourceStyle` in `page` on an EventSource for `path` or on
// subscribe(channels, options).
async function start(page, kind, { path, channels, options }) {
  const construct =
    kind === 'EventSource'
      ? `new EventSource(${JSON.stringify(path)})`
      : `(await import('/comet.js')).subscribe(${JSON.stringify(channels)}, ${JSON.stringify(options)})`;
  await page.evaluate(`(async () => { (${eventSourceStyle})(${construct}); })()`);
}

const KINDS = ['EventSource', 'subscribe'];

// Waits until `until` holds in both pages.
async function both(pages, until, what) {
  for (const kind of KINDS) {
    await pageEventually(pages[kind], until, null, `${kind}: ${what}`);
  }
}

// Consecutive identical entries are one: how many times a reconnection
// attempt fails while a server restarts is timing, not behaviour.
function collapsed(log) {
  return log.filter((entry, index) => index === 0 || JSON.stringify(entry) !== JSON.stringify(log[index - 1]));
}

test('code written for EventSource sees the same on subscribe() as on EventSource', async () => {
  const comet = await Comet.start(['--data-dir', dataDir(), '--sse-retry', '200ms']);
  try {
    const pages = {};
    for (const kind of KINDS) pages[kind] = await pageAt(browser, `${comet.base}/healthz`);
    await start(pages.EventSource, 'EventSource', { path: '/sse/news' });
    await start(pages.subscribe, 'subscribe', { channels: 'news', options: { retry: 200 } });
    await both(pages, () => window.log.some(([what]) => what === 'open'), 'open');

    await comet.publish('news', 'one');
    await comet.publish('news', 'two', 'update');
    await comet.publish('news', 'three');
    await both(pages, () => window.log.some(([, data]) => data === 'three'), 'three messages');

    // The connection is lost and comes back.
    await comet.restart('SIGKILL');
    await both(
      pages,
      () => window.log.filter(([what]) => what === 'open').length === 2,
      'an error, then open again',
    );
    await comet.publish('news', 'four');
    await both(pages, () => window.log.some(([, data]) => data === 'four'), 'the fourth message');

    // close(): CLOSED, no event, nothing more.
    for (const kind of KINDS) {
      await pages[kind].evaluate(() => {
        window.connect.close();
        window.log.push(['closed', window.connect.readyState]);
        // A control, to know when a later message has been delivered.
        window.control = [];
        const control = new EventSource('/sse/news');
        control.onopen = () => (window.controlOpen = true);
        control.onmessage = (e) => window.control.push(e.data);
      });
    }
    await both(pages, () => window.controlOpen === true, 'the control to open');
    await comet.publish('news', 'five');
    await both(pages, () => window.control.includes('five'), 'the control to receive the fifth');

    const logs = {};
    for (const kind of KINDS) logs[kind] = collapsed(await pages[kind].evaluate(() => window.log));
    const origin = new URL(comet.base).origin;
    // The reference behaves as this test expects EventSource to…
    assert.deepEqual(
      logs.EventSource.map(([what, ...rest]) => (what === 'message' ? [what, rest[0], rest[2], rest[3]] : [what, ...rest])),
      [
        ['constructed', true, [0, 1, 2], [0, 1, 2], `${comet.base}/sse/news`, false, [null, null, null]],
        ['handlers set', 'function', 'function', 'function'],
        ['open', true, true],
        ['message', 'one', origin, 1],
        ['update', 'two'],
        ['message', 'three', origin, 1],
        ['error: reconnecting'],
        ['open', true, true],
        ['message', 'four', origin, 1],
        ['closed', 2],
      ],
    );
    // …and the subscription sees exactly the same, ids included.
    assert.deepEqual(logs.subscribe, logs.EventSource);
    const urls = [];
    for (const kind of KINDS) urls.push(await pages[kind].evaluate(() => window.connect.url));
    assert.equal(urls[1], urls[0], 'the same url');
    for (const kind of KINDS) await pages[kind].close();
  } finally {
    await comet.stop();
  }
});

test('an answer retrying cannot fix: CLOSED with an error, on both', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    const pages = {};
    for (const kind of KINDS) pages[kind] = await pageAt(browser, `${comet.base}/healthz`);
    await start(pages.EventSource, 'EventSource', { path: '/sse/news?since=not-an-id' });
    await start(pages.subscribe, 'subscribe', { channels: 'news', options: { since: 'not-an-id' } });
    await both(pages, () => window.log.some(([what]) => what === 'error: gave up'), 'the error');
    const logs = {};
    for (const kind of KINDS) logs[kind] = await pages[kind].evaluate(() => window.log);
    assert.deepEqual(logs.EventSource, [
      ['constructed', true, [0, 1, 2], [0, 1, 2], `${comet.base}/sse/news`, false, [null, null, null]],
      ['handlers set', 'function', 'function', 'function'],
      ['error: gave up'],
    ]);
    assert.deepEqual(logs.subscribe, logs.EventSource);
    assert.equal(await pages.subscribe.evaluate(() => window.connect.closed), true);
    for (const kind of KINDS) await pages[kind].close();
  } finally {
    await comet.stop();
  }
});
