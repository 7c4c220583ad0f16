// publish() of comet.js in headless Chromium against the real server, on
// the durable store: a batch (an array of messages) resolves with its
// results in order and reaches a subscriber in that order, JSON values as
// compact JSON text; idempotencyKey makes a retry answer the original
// (`duplicate: true`) and another message with the key an HttpError 409,
// in a batch too; a batch the server refuses stores nothing and names the
// message (HttpError `index`); what the client can check itself is a
// TypeError naming the message, and no request; keys and batches work
// across origins (their preflights).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Comet, dataDir, launch, pageAt, received, staticServer, subscribeIn } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A page of the server's origin, ready to import /comet.js. */
async function cometPage(comet) {
  return pageAt(browser, `${comet.base}/healthz`);
}

/** The requests `page` makes to publish (`/pub` and `/pub/…`). */
function watchPublishes(page) {
  const requests = [];
  page.on('request', (request) => {
    const path = new URL(request.url()).pathname;
    if (path === '/pub' || path.startsWith('/pub/')) requests.push(`${request.method()} ${path}`);
  });
  return requests;
}

/** Every message the server holds for `channels`: [id, channel, event, data]. */
async function stored(comet, channels) {
  const answer = await (await fetch(`${comet.base}/poll/${channels}?backlog=100`)).json();
  return answer.messages.map((m) => [m.id, m.channel, m.event, m.data]);
}

test('a batch across two channels resolves with its results in order; a subscriber receives it in that order', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    const page = await cometPage(comet);
    await subscribeIn(page, 'a,b', {}, { types: ['message', 'update'] });
    const results = await page.evaluate(async () => {
      const { publish } = await import('/comet.js');
      return publish([
        { channel: 'a', data: 'one' },
        { channel: 'b', data: { x: [1, 'two', null], skipped: undefined }, event: 'update' },
        { channel: 'a', data: '{"as": "is"}' },
        { channel: 'b', data: 3.5 },
        { channel: 'a', data: 'five\nlines' },
      ]);
    });
    assert.deepEqual(
      results.map((r) => r.channel),
      ['a', 'b', 'a', 'b', 'a'],
    );
    for (const result of results) {
      assert.ok(result.id.endsWith(`/${result.channel}`), result.id);
      assert.equal(result.subscribers, 1, result.id);
      assert.equal(result.duplicate, undefined, result.id);
    }
    assert.equal(new Set(results.map((r) => r.id)).size, 5, 'five ids');
    const expected = [
      ['message', 'one'],
      ['update', '{"x":[1,"two",null]}'],
      ['message', '{"as": "is"}'],
      ['message', '3.5'],
      ['message', 'five\nlines'],
    ].map(([type, data], i) => ({ type, data, id: results[i].id, channel: results[i].channel }));
    assert.deepEqual(await received(page, 5), expected);
    // What the server stored, in the same order.
    assert.deepEqual(
      await stored(comet, 'a,b'),
      expected.map((m) => [m.id, m.channel, m.type, m.data]),
    );
    assert.deepEqual(page.problems, []);
    await page.close();
  } finally {
    await comet.stop();
  }
});

test('idempotencyKey: a retry resolves with the original (duplicate: true); another message with the key is a 409', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    const page = await cometPage(comet);
    const outcome = await page.evaluate(async () => {
      const comet = await import('/comet.js');
      const attempt = async (...args) => {
        try {
          return await comet.publish(...args);
        } catch (error) {
          return {
            name: error.name,
            isHttpError: error instanceof comet.HttpError,
            status: error.status,
            code: error.code,
            index: error.index,
            retryable: error.retryable,
          };
        }
      };
      return {
        first: await attempt('a', 'one', { idempotencyKey: 'order-42' }),
        retry: await attempt('a', 'one', { idempotencyKey: 'order-42' }),
        other: await attempt('a', 'other data', { idempotencyKey: 'order-42' }),
        // The same key on another channel names another publish.
        elsewhere: await attempt('b', 'one', { idempotencyKey: 'order-42' }),
        // In a batch: the key matched answers the original, a new message is stored.
        batch: await attempt([
          { channel: 'a', data: 'one', idempotencyKey: 'order-42' },
          { channel: 'a', data: 'two', idempotencyKey: 'order-43' },
        ]),
        // A batch reusing a key for another message: refused whole, naming it.
        conflict: await attempt([
          { channel: 'a', data: 'three' },
          { channel: 'a', data: 'not two', idempotencyKey: 'order-43' },
        ]),
      };
    });
    const { first, retry, other, elsewhere, batch, conflict } = outcome;
    assert.deepEqual(Object.keys(first).sort(), ['channel', 'id', 'subscribers']);
    assert.deepEqual(retry, { ...first, duplicate: true });
    assert.deepEqual(other, {
      name: 'HttpError',
      isHttpError: true,
      status: 409,
      code: 'idempotency_conflict',
      index: undefined,
      retryable: false,
    });
    assert.equal(elsewhere.duplicate, undefined);
    assert.notEqual(elsewhere.id, first.id);
    assert.deepEqual(batch[0], { ...first, duplicate: true });
    assert.equal(batch[1].duplicate, undefined);
    assert.deepEqual(conflict, { ...other, index: 1 });
    assert.deepEqual(
      (await stored(comet, 'a')).map(([id, , , data]) => [id, data]),
      [
        [first.id, 'one'],
        [batch[1].id, 'two'],
      ],
      'each message stored once, nothing of the refused batch',
    );
    await page.close();
  } finally {
    await comet.stop();
  }
});

test('a batch the server refuses rejects with an HttpError naming the message, and stores nothing', async () => {
  const comet = await Comet.start(['--data-dir', dataDir(), '--max-body', '8']);
  try {
    const page = await cometPage(comet);
    const outcome = await page.evaluate(async () => {
      const comet = await import('/comet.js');
      const attempt = async (messages) => {
        try {
          return await comet.publish(messages);
        } catch (error) {
          const { name, status, code, index } = error;
          return { name, isHttpError: error instanceof comet.HttpError, status, code, index };
        }
      };
      return {
        // comet.js leaves event types to the server, which reserves comet-….
        reserved: await attempt([
          { channel: 'a', data: 'fine' },
          { channel: 'b', data: 'fine' },
          { channel: 'b', data: 'x', event: 'comet-x' },
        ]),
        // Data over --max-body (8 bytes), in a message of its own.
        tooLarge: await attempt([
          { channel: 'a', data: 'fine' },
          { channel: 'b', data: 'nine byte' },
        ]),
      };
    });
    assert.deepEqual(outcome.reserved, { name: 'HttpError', isHttpError: true, status: 400, code: 'reserved_event', index: 2 });
    assert.deepEqual(outcome.tooLarge, { name: 'HttpError', isHttpError: true, status: 413, code: 'payload_too_large', index: 1 });
    assert.deepEqual(await stored(comet, 'a,b'), [], 'nothing of either batch was stored');
    const { channels } = await (await fetch(`${comet.base}/channels`)).json();
    assert.deepEqual(channels, []);
    await page.close();
  } finally {
    await comet.stop();
  }
});

test('what the client can check itself is a TypeError naming the message, and no request', async () => {
  const comet = await Comet.start(['--data-dir', dataDir()]);
  try {
    const page = await cometPage(comet);
    const requests = watchPublishes(page);
    const outcome = await page.evaluate(async () => {
      const { publish } = await import('/comet.js');
      const attempt = async (...args) => {
        try {
          await publish(...args);
          return 'sent';
        } catch (error) {
          return `${error.name}: ${error.message}`;
        }
      };
      const fine = { channel: 'a', data: 'fine' };
      return {
        channel: await attempt([fine, { channel: 'b', data: 'fine' }, { channel: 'a b', data: 'x' }]),
        dot: await attempt([fine, { channel: '..', data: 'x' }]),
        data: await attempt([fine, { channel: 'b', data: new Blob(['x']) }]),
        noData: await attempt([{ channel: 'b' }]),
        key: await attempt([fine, fine, fine, { ...fine, idempotencyKey: 'with space' }]),
        event: await attempt([{ ...fine, event: 7 }]),
        notObject: await attempt([fine, 'a']),
        optionEvent: await attempt([fine], { event: 'update' }),
        optionKey: await attempt([fine], { idempotencyKey: 'k' }),
        options: await attempt([fine], 'data', {}),
        keys: {
          empty: await attempt('a', 'x', { idempotencyKey: '' }),
          space: await attempt('a', 'x', { idempotencyKey: 'a b' }),
          nonAscii: await attempt('a', 'x', { idempotencyKey: 'é' }),
          tooLong: await attempt('a', 'x', { idempotencyKey: '~'.repeat(256) }),
          number: await attempt('a', 'x', { idempotencyKey: 42 }),
        },
      };
    });
    const typeError = (what) => new RegExp(`^TypeError: publish: message ${what}`);
    assert.match(outcome.channel, typeError('2 of the batch: "a b" is not a channel name'));
    assert.match(outcome.dot, typeError('1 of the batch: the channel \\.\\. cannot be named in a URL'));
    assert.match(outcome.data, typeError('1 of the batch: data must be a string or a plain JSON value'));
    assert.match(outcome.noData, typeError('0 of the batch: data must be'));
    assert.match(outcome.key, typeError('3 of the batch: "with space" is not an idempotency key'));
    assert.match(outcome.event, typeError('0 of the batch: the event type 7 is not a string'));
    assert.match(outcome.notObject, typeError('1 of the batch is not an object'));
    assert.match(outcome.optionEvent, /^TypeError: publish: in a batch, `event` and `idempotencyKey` belong to each message/);
    assert.match(outcome.optionKey, /^TypeError: publish: in a batch, `event` and `idempotencyKey` belong to each message/);
    assert.match(outcome.options, /^TypeError: publish: with an array of messages, the second argument is the options/);
    for (const [label, result] of Object.entries(outcome.keys)) {
      assert.match(result, /^TypeError: publish: .* is not an idempotency key/, label);
    }
    assert.deepEqual(requests, [], 'no request was made');
    // The longest key, and an empty batch, the server takes.
    const sent = await page.evaluate(async () => {
      const { publish } = await import('/comet.js');
      return [await publish('a', 'x', { idempotencyKey: '~'.repeat(255) }), await publish([])];
    });
    assert.equal(sent[0].channel, 'a');
    assert.deepEqual(sent[1], []);
    assert.deepEqual(requests, ['POST /pub/a', 'POST /pub']);
    await page.close();
  } finally {
    await comet.stop();
  }
});

test('a page of another origin publishes with a key and in a batch (their preflights pass)', async () => {
  const pages = await staticServer({ '/page.html': ['text/html', '<!doctype html><title>elsewhere</title>'] });
  const comet = await Comet.start(['--data-dir', dataDir(), '--cors-origin', pages.origin]);
  try {
    const page = await pageAt(browser, `${pages.origin}/page.html`);
    const outcome = await page.evaluate(async (server) => {
      const { publish } = await import(`${server}/comet.js`);
      const keyed = await publish('a', 'one', { server, idempotencyKey: 'k' });
      const again = await publish('a', 'one', { server, idempotencyKey: 'k' });
      const batch = await publish([{ channel: 'b', data: { n: 2 } }], { server });
      return { keyed, again, batch };
    }, comet.base);
    assert.deepEqual(outcome.again, { ...outcome.keyed, duplicate: true });
    assert.deepEqual(
      await stored(comet, 'a,b'),
      [
        [outcome.keyed.id, 'a', 'message', 'one'],
        [outcome.batch[0].id, 'b', 'message', '{"n":2}'],
      ],
    );
    assert.deepEqual(page.problems, []);
    await page.close();
  } finally {
    await comet.stop();
    pages.close();
  }
});
