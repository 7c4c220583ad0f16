// comet.js with authorization, in headless Chromium against the real server
// started with --jwt-secret-file and --api-keys-file: subscriptions whose
// 2-second JWTs expire again and again renew them with getToken and lose or
// repeat nothing, over every transport; the browser's own EventSource gives
// up on an expired URL token where comet.js goes on, and the browser's own
// WebSocket is closed with 4401; without getToken an expiry ends the
// subscription, with no retrying; fresh tokens refused again and again end
// it after backing off, and a 403 at once; a reload that revokes a token
// ends a WebSocket with 4403 and an SSE stream; 'auto' meets a refused
// WebSocket or EventSource with a fresh token instead of moving down;
// withCredentials sends the comet_token cookie across origins (a WebSocket
// carries it regardless); publish() carries a token. Tokens are minted here (jose) and handed to pages
// through page.exposeFunction; the publisher is this process, with an API key.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';

import { Comet, dataDir, launch, pageAt, pageEventually, received, staticServer, subscribeIn } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const PUBLISHER_KEY = `publisher-${randomBytes(12).toString('hex')}`;

/** A server that needs a token for everything: JWTs signed with a fresh
 * HS256 secret (`comet.secret`), and PUBLISHER_KEY, an API key for every channel. */
async function authServer(extra = []) {
  const dir = dataDir();
  const secret = randomBytes(32).toString('hex');
  writeFileSync(join(dir, 'jwt-secret'), secret);
  writeFileSync(join(dir, 'api-keys'), `${PUBLISHER_KEY}\n`);
  const comet = await Comet.start([
    '--data-dir',
    join(dir, 'data'),
    '--jwt-secret-file',
    join(dir, 'jwt-secret'),
    '--api-keys-file',
    join(dir, 'api-keys'),
    ...extra,
  ]);
  comet.secret = new TextEncoder().encode(secret);
  comet.dir = dir;
  return comet;
}

/** A JWT signed with `secret`, granting `grants` ({subscribe, publish}),
 * for `seconds` (whole seconds, as `exp` is: between seconds - 1 and
 * seconds from now). Each one is different (its `jti`). */
function mint(secret, grants, seconds = 2) {
  return new SignJWT({ comet: grants })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setJti(randomUUID())
    .setExpirationTime(Math.floor(Date.now() / 1000) + seconds)
    .sign(secret);
}

/** `exp` of a JWT, in ms. */
function expiryOf(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp * 1000;
}

/** Publishes as the node-side publisher (the API key); returns the id. */
async function publish(comet, channel, data) {
  const response = await fetch(`${comet.base}/pub/${channel}`, {
    method: 'POST',
    body: data,
    headers: { authorization: `Bearer ${PUBLISHER_KEY}` },
  });
  const body = await response.json();
  if (response.status !== 201) throw new Error(`publish answered ${response.status}: ${JSON.stringify(body)}`);
  return body.id;
}

/** A page of the server's origin, ready to import /comet.js, whose getToken
 * (`mintToken`) mints a fresh token with `grants` for `seconds`. */
async function tokenPage(comet, { grants = { subscribe: ['news'] }, seconds = 2 } = {}) {
  const page = await pageAt(browser, `${comet.base}/healthz`);
  await page.exposeFunction('mintToken', () => mint(comet.secret, grants, seconds));
  return page;
}

/**
 * Records the page's subscription requests (/sse/, /stream/, /poll/, and
 * WebSocket handshakes to /ws/) as `{kind, url, token, status}`: the token
 * from the `token` query parameter or the Authorization header, the status
 * once answered (never for a WebSocket: the browser does not tell).
 * `settled()` resolves with them once every header has been read.
 */
function watchRequests(page) {
  const requests = [];
  const pending = [];
  const entries = new Map();
  page.on('websocket', (socket) => {
    const url = new URL(socket.url());
    if (url.pathname.split('/')[1] !== 'ws') return;
    requests.push({ kind: 'ws', url: socket.url(), token: url.searchParams.get('token'), status: null });
  });
  page.on('request', (request) => {
    const url = new URL(request.url());
    const kind = url.pathname.split('/')[1];
    if (!['sse', 'stream', 'poll'].includes(kind)) return;
    const entry = { kind, url: request.url(), token: url.searchParams.get('token'), status: null };
    requests.push(entry);
    entries.set(request, entry);
    pending.push(
      request.allHeaders().then(
        (headers) => {
          if (headers.authorization) entry.token = headers.authorization.replace(/^Bearer /, '');
        },
        // A request still in flight when its page closes has no headers to
        // read any more; a test that looks at it sees why.
        (error) => {
          entry.unread = error.message;
        },
      ),
    );
  });
  page.on('response', (response) => {
    const entry = entries.get(response.request());
    if (entry) entry.status = response.status();
  });
  return {
    requests,
    settled: async () => {
      await Promise.all(pending);
      return requests;
    },
  };
}

/** Records, in the page, every fetch comet.js makes: when (this browser's
 * clock), where, and the token it carries. The real fetch is called. */
async function recordFetches(page) {
  await page.evaluate(() => {
    const realFetch = window.fetch;
    window.fetches = [];
    window.fetch = (url, init) => {
      const authorization = init?.headers?.Authorization ?? null;
      window.fetches.push({ at: Date.now(), url: String(url), token: authorization && authorization.replace(/^Bearer /, '') });
      return realFetch(url, init);
    };
  });
}

// The kinds of subscription request each transport makes once open.
const KIND = { ws: 'ws', sse: 'sse', stream: 'stream', longpoll: 'poll' };

describe('tokens that expire, renewed with getToken', () => {
  for (const [transport, extra] of [
    ['ws', {}],
    ['sse', {}],
    ['stream', {}],
    ['stream', { streamVia: 'xhr' }],
    ['longpoll', {}],
  ]) {
    const name = extra.streamVia ? `${transport} (XHR at readyState 3)` : transport;
    test(`${name}: a steady publisher across several 2-second tokens; every message once, in order`, async () => {
      const comet = await authServer();
      try {
        const page = await tokenPage(comet);
        const watched = watchRequests(page);
        await recordFetches(page);
        await subscribeIn(page, 'news', { transport, retry: 100, ...extra }, { getToken: 'mintToken' });
        // A numbered message every 100 ms for 8 s: four to eight tokens expire meanwhile.
        const ids = [];
        const started = Date.now();
        for (let n = 0; Date.now() - started < 8000; n += 1) {
          ids.push(await publish(comet, 'news', String(n)));
          await delay(100); // the publisher's pace
        }
        await pageEventually(
          page,
          (count) => window.received.length >= count || window.sub.readyState === 2,
          ids.length,
          `${ids.length} messages`,
        );
        const got = await page.evaluate(() => window.received);
        assert.deepEqual(
          got.map((m) => m.data),
          ids.map((_, n) => String(n)),
          'every message once, in order',
        );
        assert.deepEqual(
          got.map((m) => m.id),
          ids,
        );
        const [calls, renewals] = await page.evaluate(() => [window.tokenCalls, window.tokenEvents]);
        assert.ok(calls >= 4, `getToken called ${calls} times`);
        // The page saw renewals and nothing else: no error, no change of
        // transport. One comet-token a call but the first (and one renewal
        // may be under way).
        assert.deepEqual(await page.evaluate(() => window.errors), [], 'no error event');
        assert.ok(renewals.length === calls - 1 || renewals.length === calls - 2, `${renewals.length} comet-token events`);
        assert.ok(renewals.every((reason) => reason === 'expired'), renewals.join());
        assert.deepEqual(await page.evaluate(() => window.transports), [transport]);
        assert.equal(await page.evaluate(() => window.sub.readyState), 1, 'OPEN');

        const requests = await watched.settled();
        for (const request of requests) {
          assert.ok(request.token, `${request.url} carries a token`);
          assert.notEqual(request.status, 401, `${request.url} was refused`);
        }
        if (transport === 'sse' || transport === 'ws') {
          for (const request of requests.filter((r) => r.kind === transport)) {
            assert.equal(new URL(request.url).searchParams.get('token'), request.token, `${transport}: the token in the URL`);
          }
        }
        // WebSocket, SSE and streams: each connection after an expiry carries a fresh token.
        const connections = requests.filter((r) => r.kind === KIND[transport]);
        if (transport !== 'longpoll') {
          assert.equal(new Set(connections.map((r) => r.token)).size, connections.length, 'a fresh token for each connection');
          assert.ok(connections.length >= 4, `${connections.length} connections`);
        }
        // fetch (streams, polls): no request went out with a token that had already expired.
        for (const sent of await page.evaluate(() => window.fetches)) {
          assert.ok(expiryOf(sent.token) > sent.at, `${sent.url} sent ${sent.at - expiryOf(sent.token)} ms after its token's exp`);
        }
        assert.deepEqual(page.problems, []);
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }
});

test("the browser's own EventSource gives up on an expired URL token; subscribe() with getToken goes on", async () => {
  // EventSource reconnects after `retry`; 1.5 s is past the second in which
  // the server still accepts a token whose `exp` has just passed.
  const comet = await authServer(['--sse-retry', '1500ms']);
  try {
    // The reference: EventSource, with a URL token of 3 seconds (2 to 3 s
    // of life: room for the two publishes on a slow machine).
    const reference = await pageAt(browser, `${comet.base}/healthz`);
    const answers = [];
    reference.on('response', (response) => {
      if (new URL(response.url()).pathname === '/sse/news') answers.push([response.url(), response.status()]);
    });
    const token = await mint(comet.secret, { subscribe: ['news'] }, 3);
    await reference.evaluate((token) => {
      window.log = [];
      const source = new EventSource(`/sse/news?token=${token}`);
      window.source = source;
      source.onopen = () => window.log.push(['open', source.readyState]);
      source.onmessage = (e) => window.log.push(['message', e.data]);
      source.addEventListener('comet-expired', (e) => window.log.push(['comet-expired', e.data, source.readyState]));
      source.onerror = () => window.log.push(['error', source.readyState]);
    }, token);
    await pageEventually(reference, () => window.log.length > 0, null, 'EventSource to open');
    await publish(comet, 'news', 'one');
    await publish(comet, 'news', 'two');
    await pageEventually(reference, () => window.log.some(([what, state]) => what === 'error' && state === 2), null, 'EventSource to give up');
    assert.deepEqual(await reference.evaluate(() => window.log), [
      ['open', 1],
      ['message', 'one'],
      ['message', 'two'],
      ['comet-expired', '{"expired":true}', 1],
      ['error', 0], // the server ended the response: EventSource reconnects…
      ['error', 2], // …with the same URL, is answered 401, and gives up for good
    ]);
    const url = `${comet.base}/sse/news?token=${token}`;
    assert.deepEqual(answers, [
      [url, 200],
      [url, 401],
    ]);

    // comet.js over SSE, with getToken: the expiry is met with a fresh token.
    const page = await tokenPage(comet);
    await subscribeIn(page, 'news', { transport: 'sse' }, { getToken: 'mintToken' });
    const ids = [await publish(comet, 'news', 'three')];
    await received(page, 1);
    await pageEventually(page, () => window.tokenEvents.length >= 1, null, 'a token to expire and be renewed');
    ids.push(await publish(comet, 'news', 'four'));
    assert.deepEqual((await received(page, 2)).map((m) => m.id), ids);
    assert.deepEqual(await page.evaluate(() => [window.errors, window.sub.readyState]), [[], 1]);
    // Meanwhile (more than a second), the EventSource tried nothing more.
    assert.deepEqual(await reference.evaluate(() => [window.log.length, window.source.readyState]), [6, 2]);
    assert.equal(answers.length, 2, 'no request after giving up');
    await reference.close();
    await page.close();
  } finally {
    await comet.stop();
  }
});

test('without getToken, an expiry ends the subscription: error, CLOSED, 401, and no retrying', async () => {
  const comet = await authServer();
  try {
    const transports = ['ws', 'sse', 'stream', 'longpoll'];
    const pages = {};
    const watched = {};
    // The pages first: opening them is the slow part, and each token must
    // outlive every subscription's start and the publish (its `exp` is in
    // whole seconds, so a token of 4 s lasts 3 to 4).
    for (const transport of transports) {
      pages[transport] = await pageAt(browser, `${comet.base}/healthz`);
      watched[transport] = watchRequests(pages[transport]);
    }
    for (const transport of transports) {
      const token = await mint(comet.secret, { subscribe: ['news'] }, 4);
      // Short retry delays: a client that retried would make many requests.
      await subscribeIn(pages[transport], 'news', { transport, token, retry: 100, maxRetry: 200 });
    }
    const id = await publish(comet, 'news', 'before the expiry');
    for (const transport of transports) {
      assert.equal((await received(pages[transport], 1))[0].id, id, transport);
    }
    const counts = {};
    for (const transport of transports) {
      await pageEventually(pages[transport], () => window.errors.length >= 1, null, `${transport}: the error`);
      counts[transport] = watched[transport].requests.length;
    }
    // A measurement, not a synchronisation: what each page requests within
    // 1.5 s of its error (with a 100 ms retry, a client that kept trying
    // would make several requests).
    await delay(1500);
    for (const transport of transports) {
      const page = pages[transport];
      const errors = await page.evaluate(() => window.errors);
      assert.equal(errors.length, 1, `${transport}: one error event`);
      assert.deepEqual([errors[0].readyState, errors[0].status], [2, 401], `${transport}: CLOSED, 401`);
      assert.match(errors[0].message, /unauthorized/);
      assert.equal(await page.evaluate(() => window.sub.closed), true);
      const requests = await watched[transport].settled();
      assert.equal(requests.length, counts[transport], `${transport}: no request after the error`);
      assert.ok(requests.every((r) => r.token), `${transport}: every request carries the token`);
      await page.close();
    }
  } finally {
    await comet.stop();
  }
});

test('a reload that revokes the token ends the subscription: a WebSocket by 4403 (403), an SSE stream by its end and the refused reconnection (401)', async () => {
  const comet = await authServer();
  try {
    // The errors each page sees: [readyState, status]. The SSE stream just
    // ends: a lost connection (CONNECTING), then the reconnection's 401.
    const expected = {
      ws: [[2, 403]],
      sse: [
        [0, undefined],
        [2, 401],
      ],
    };
    const pages = {};
    for (const transport of Object.keys(expected)) {
      pages[transport] = await pageAt(browser, `${comet.base}/healthz`);
      const token = await mint(comet.secret, { subscribe: ['news'] }, 600);
      await subscribeIn(pages[transport], 'news', { transport, token, retry: 100, maxRetry: 200 });
    }
    const id = await publish(comet, 'news', 'before the reload');
    for (const transport of Object.keys(expected)) {
      assert.equal((await received(pages[transport], 1))[0].id, id, transport);
    }
    // A new JWT secret: every token signed with the old one is revoked.
    writeFileSync(join(comet.dir, 'jwt-secret'), randomBytes(32).toString('hex'));
    comet.process.kill('SIGHUP');
    for (const [transport, errors] of Object.entries(expected)) {
      const page = pages[transport];
      await pageEventually(page, () => window.sub.readyState === 2, null, `${transport}: the end`);
      const seen = await page.evaluate(() => window.errors);
      assert.deepEqual(
        seen.map((e) => [e.readyState, e.status]),
        errors,
        `${transport}: ${JSON.stringify(seen)}`,
      );
      await page.close();
    }
  } finally {
    await comet.stop();
  }
});

describe('tokens the server refuses', () => {
  for (const transport of ['ws', 'sse', 'stream', 'longpoll']) {
    test(`${transport}: fresh tokens refused again and again: backing off, then error, CLOSED, 401`, async () => {
      const comet = await authServer();
      try {
        const since = await publish(comet, 'news', 'zero');
        const page = await pageAt(browser, `${comet.base}/healthz`);
        // Signed with another secret: the server refuses every one.
        const wrong = new TextEncoder().encode(randomBytes(32).toString('hex'));
        await page.exposeFunction('wrongToken', () => mint(wrong, { subscribe: ['news'] }, 60));
        const watched = watchRequests(page);
        // `since`: no first poll; the transport meets the refusal itself.
        await subscribeIn(page, 'news', { transport, since, retry: 100, maxRetry: 1000 }, { getToken: 'wrongToken', wait: false });
        await pageEventually(page, () => window.sub.readyState === 2, null, 'the subscription to end');
        const requests = await watched.settled();
        const errors = await page.evaluate(() => window.errors);
        assert.deepEqual(
          errors.map((e) => [e.readyState, e.status]),
          [
            [0, undefined],
            [0, undefined],
            [2, 401],
          ],
          'two retries (CONNECTING), then CLOSED with 401',
        );
        assert.equal(await page.evaluate(() => window.tokenCalls), 3, 'getToken called three times');
        assert.deepEqual(await page.evaluate(() => window.tokenEvents), ['unauthorized', 'unauthorized']);
        // (A WebSocket's status is not seen: the poll asking about it shows the refusal.)
        assert.ok(requests.every((r) => r.status === 401 || r.kind === 'ws'), 'every request refused');
        // EventSource's and WebSocket's refusals are asked about with a poll: two requests a token.
        const asked = transport === 'sse' || transport === 'ws';
        assert.equal(requests.length, asked ? 6 : 3, `${requests.length} requests`);
        if (asked) assert.deepEqual(requests.map((r) => r.kind), [transport, 'poll', transport, 'poll', transport, 'poll']);
        assert.equal(new Set(requests.map((r) => r.token)).size, 3, 'each token its own requests');
        await page.close();
      } finally {
        await comet.stop();
      }
    });
  }

  test('a token that does not grant the channel: 403, at once, never retried', async () => {
    const comet = await authServer();
    try {
      const page = await tokenPage(comet, { grants: { subscribe: ['sport'] } });
      const watched = watchRequests(page);
      await subscribeIn(page, 'news', { retry: 100 }, { getToken: 'mintToken', wait: false });
      await pageEventually(page, () => window.sub.readyState === 2, null, 'the subscription to end');
      const errors = await page.evaluate(() => window.errors);
      assert.deepEqual(
        errors.map((e) => [e.readyState, e.status]),
        [[2, 403]],
      );
      assert.match(errors[0].message, /forbidden/);
      assert.equal(await page.evaluate(() => window.tokenCalls), 1);
      assert.equal((await watched.settled()).length, 1, 'one request');
      await page.close();
    } finally {
      await comet.stop();
    }
  });

  for (const [name, transport, removed, kind] of [
    ['WebSocket', 'ws', [], 'ws'],
    ['EventSource (no WebSocket)', 'sse', ['WebSocket'], 'sse'],
  ]) {
    test(`auto: ${name} refused with 401 is asked about with the token, renewed, and stays on ${transport}`, async () => {
      const comet = await authServer();
      const context = await browser.newContext();
      try {
        await context.addInitScript((names) => {
          for (const name of names) delete window[name];
        }, removed);
        const since = await publish(comet, 'news', 'zero');
        const page = await pageAt(context, `${comet.base}/healthz`);
        await page.exposeFunction('mintToken', () => mint(comet.secret, { subscribe: ['news'] }, 60));
        const wrong = await mint(new TextEncoder().encode(randomBytes(32).toString('hex')), { subscribe: ['news'] }, 60);
        const watched = watchRequests(page);
        await subscribeIn(page, 'news', { since, token: wrong, retry: 100 }, { getToken: 'mintToken' });
        const id = await publish(comet, 'news', 'one');
        assert.equal((await received(page, 1))[0].id, id);
        // The unavailable WebSocket is announced, then left at once: not a move down.
        assert.deepEqual(await page.evaluate(() => window.transports), removed.length ? ['ws', transport] : [transport], 'never moved down');
        assert.deepEqual(await page.evaluate(() => window.tokenEvents), ['unauthorized']);
        assert.deepEqual(await page.evaluate(() => window.errors), [], 'no error event');
        const requests = await watched.settled();
        const fresh = requests.at(-1).token;
        const status = kind === 'ws' ? null : 401; // a WebSocket's refusal is not seen
        assert.deepEqual(
          requests.map((r) => [r.kind, r.token, r.status]),
          [
            [kind, wrong, status],
            ['poll', wrong, 401], // the poll asking why the connection failed carries the token
            [kind, fresh, kind === 'ws' ? null : 200],
          ],
        );
        assert.notEqual(fresh, wrong);
        await page.close();
      } finally {
        await context.close();
        await comet.stop();
      }
    });
  }
});

test('withCredentials: a page of another origin subscribes with the comet_token cookie', async () => {
  const pages = await staticServer({ '/page.html': ['text/html', '<!doctype html><title>elsewhere</title>'] });
  const comet = await authServer(['--cors-origin', pages.origin]);
  const context = await browser.newContext();
  try {
    // The cookie is the server's (same host, another port than the page's).
    const token = await mint(comet.secret, { subscribe: ['news'] }, 600);
    await context.addCookies([{ name: 'comet_token', value: token, url: comet.base }]);
    const cases = [
      ['ws', {}],
      ['sse', {}],
      ['stream', {}],
      ['stream', { streamVia: 'xhr' }],
      ['longpoll', {}],
    ];
    const subscribed = [];
    for (const [transport, extra] of cases) {
      const page = await pageAt(context, `${pages.origin}/page.html`);
      await subscribeIn(page, 'news', { server: comet.base, transport, withCredentials: true, ...extra }, { module: `${comet.base}/comet.js` });
      assert.equal(await page.evaluate(() => window.sub.withCredentials), true);
      subscribed.push(page);
    }
    const id = await publish(comet, 'news', 'with the cookie');
    for (const page of subscribed) assert.equal((await received(page, 1))[0].id, id);
    // Without withCredentials the cookie stays home (over HTTP): 401.
    const without = await pageAt(context, `${pages.origin}/page.html`);
    await subscribeIn(without, 'news', { server: comet.base, transport: 'sse' }, { module: `${comet.base}/comet.js`, wait: false });
    await pageEventually(without, () => window.sub.readyState === 2, null, 'the refusal');
    assert.deepEqual(
      (await without.evaluate(() => window.errors)).map((e) => [e.readyState, e.status]),
      [[2, 401]],
    );
    // A WebSocket handshake carries the server's cookies whatever
    // withCredentials says (the browser gives no choice; --cors-origin
    // decides which pages may open one). With `since`, no poll goes first.
    const socket = await pageAt(context, `${pages.origin}/page.html`);
    await subscribeIn(socket, 'news', { server: comet.base, transport: 'ws', since: id }, { module: `${comet.base}/comet.js` });
    const next = await publish(comet, 'news', 'over the WebSocket');
    assert.equal((await received(socket, 1))[0].id, next);
  } finally {
    await context.close();
    await comet.stop();
    pages.close();
  }
});

test('publish() with a token: an API key or a JWT granting publish; 401 without, 403 when not granted', async () => {
  const comet = await authServer();
  try {
    const page = await pageAt(browser, `${comet.base}/healthz`);
    const tokens = {
      key: PUBLISHER_KEY,
      publisher: await mint(comet.secret, { publish: ['news'] }, 60),
      subscriber: await mint(comet.secret, { subscribe: ['news'] }, 60),
    };
    const outcome = await page.evaluate(async (tokens) => {
      const { publish } = await import('/comet.js');
      const attempt = async (data, options) => {
        try {
          return { id: (await publish('news', data, options)).id };
        } catch (error) {
          return { status: error.status, code: error.code };
        }
      };
      return {
        key: await attempt('by key', { token: tokens.key }),
        publisher: await attempt('by jwt', { token: tokens.publisher, event: 'typed' }),
        none: await attempt('no token', {}),
        subscriber: await attempt('not granted', { token: tokens.subscriber }),
      };
    }, tokens);
    assert.deepEqual(outcome.none, { status: 401, code: 'unauthorized' });
    assert.deepEqual(outcome.subscriber, { status: 403, code: 'forbidden' });
    const stored = await (
      await fetch(`${comet.base}/poll/news?backlog=10`, { headers: { authorization: `Bearer ${PUBLISHER_KEY}` } })
    ).json();
    assert.deepEqual(
      stored.messages.map((m) => [m.id, m.event, m.data]),
      [
        [outcome.key.id, 'message', 'by key'],
        [outcome.publisher.id, 'typed', 'by jwt'],
      ],
    );
    await page.close();
  } finally {
    await comet.stop();
  }
});
