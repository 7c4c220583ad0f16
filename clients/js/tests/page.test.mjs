// The built-in page at / in headless Chromium: it renders, subscribes,
// publishes and shows what arrives; it shows a lost connection as such and
// stops on a refusal; it asks for the channel list sparingly; the
// comparison view runs all five transports side by side; it fits a phone;
// it carries the token typed into it to a server that asks for one; and it
// logs no errors. Screenshots are saved under target/browser/ with
// the test output.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Comet, dataDir, launch, openPage, pageAt, root } from './harness.mjs';

const shots = join(root, 'target/browser');
let browser;
let comet;
before(async () => {
  mkdirSync(shots, { recursive: true });
  browser = await launch();
  comet = await Comet.start(['--data-dir', dataDir()]);
});
after(async () => {
  await browser?.close();
  await comet?.stop();
});

test('the live view subscribes, publishes and shows messages as they arrive', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await pageAt(context, `${comet.base}/`);
  assert.equal(await page.title(), 'Comet');
  await page.fill('#subscribe-form input[name=channels]', 'news,sport');
  await page.fill('#subscribe-form input[name=types]', 'score');
  await page.click('#subscribe-button');
  // The transport, as the subscription's comet-transport event names it.
  await page.waitForFunction(() => document.querySelector('#subscription-state').textContent === 'subscribed over ws');

  // From the page's own form…
  await page.fill('#publish-form input[name=channel]', 'news');
  await page.fill('#publish-form textarea', 'first line\nsecond line');
  await page.click('#publish-form button');
  await page.waitForFunction(() => document.querySelector('#publish-result').textContent.startsWith('published'));
  // …and from elsewhere, with a custom type.
  const id = await comet.publish('sport', '3 - 1', 'score');
  await page.waitForFunction(() => document.querySelectorAll('#log li').length === 2);
  const entries = await page.$$eval('#log li', (items) =>
    items.map((item) => ({
      channel: item.querySelector('.channel').textContent,
      data: item.querySelector('pre').textContent,
      id: item.querySelector('.id').textContent,
    })),
  );
  assert.deepEqual(entries[0], { channel: 'sport score', data: '3 - 1', id });
  assert.equal(entries[1].data, 'first line\nsecond line');
  assert.match(entries[1].id, /\/news$/);

  // The channel picker knows the channels (refreshed when a field is focused).
  await page.focus('#publish-form input[name=channel]');
  await page.waitForFunction(() =>
    ['news', 'sport'].every((name) => document.querySelector(`#known-channels option[value="${name}"]`)),
  );
  await page.screenshot({ path: join(shots, 'live.png'), fullPage: true });
  console.log(`screenshot: ${join(shots, 'live.png')}`);
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('the comparison view shows all five transports live', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await pageAt(context, `${comet.base}/`);
  await page.click('.tab[data-view=compare]');
  await page.selectOption('#compare-form select[name=interval]', '200');
  await page.click('#compare-button');
  await page.waitForFunction(
    () => [...document.querySelectorAll('dd[data-key=messages]')].every((value) => Number(value.textContent) >= 5),
    null,
    { timeout: 20000 },
  );
  const cards = await page.$$eval('.card', (cards) =>
    cards.map((card) => {
      const value = (key) => card.querySelector(`dd[data-key=${key}]`).textContent;
      return {
        transport: card.dataset.transport,
        requests: Number(value('requests')),
        bytes: value('bytes'),
        median: value('median'),
      };
    }),
  );
  assert.deepEqual(cards.map((card) => card.transport), ['ws', 'sse', 'stream', 'longpoll', 'poll']);
  for (const card of cards) {
    assert.ok(card.requests >= 1, `${card.transport} counts requests`);
    assert.match(card.bytes, /\d+(\.\d+)? (B|KiB|MiB)$/, `${card.transport} counts bytes`);
    assert.match(card.median, /^\d+ ms$/, `${card.transport} measures latency`);
  }
  // Polling costs one request per answer; streams keep one open.
  const byTransport = Object.fromEntries(cards.map((card) => [card.transport, card.requests]));
  assert.ok(byTransport.poll > byTransport.sse, 'short polling makes more requests than SSE');
  assert.ok(byTransport.poll > byTransport.ws, 'short polling makes more requests than WebSocket');
  await page.screenshot({ path: join(shots, 'compare.png'), fullPage: true });
  console.log(`screenshot: ${join(shots, 'compare.png')}`);
  await page.click('#compare-button');
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('the page fits a phone-sized window', async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await pageAt(context, `${comet.base}/`);
  await page.click('#subscribe-button');
  await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('subscribed'));
  await comet.publish('news', 'a rather long message that has to wrap on a small screen without making the page scroll sideways');
  await page.waitForSelector('#log li');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow} px too wide)`);
  await page.screenshot({ path: join(shots, 'phone.png'), fullPage: true });
  console.log(`screenshot: ${join(shots, 'phone.png')}`);
  await page.click('.tab[data-view=compare]');
  const overflowCompare = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflowCompare <= 0, `the comparison fits too (${overflowCompare} px too wide)`);
  await page.screenshot({ path: join(shots, 'phone-compare.png'), fullPage: true });
  console.log(`screenshot: ${join(shots, 'phone-compare.png')}`);
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('a lost connection shows as reconnecting and comes back; a refusal stops the subscription', async () => {
  const own = await Comet.start(['--data-dir', dataDir(), '--sse-retry', '100ms']);
  try {
    const context = await browser.newContext();
    const page = await pageAt(context, `${own.base}/`);
    const state = () => page.$eval('#subscription-state', (output) => output.textContent);
    const button = () => page.$eval('#subscribe-button', (button) => button.textContent);
    await page.click('#subscribe-button');
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent === 'subscribed over ws');

    await own.stop('SIGKILL');
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('reconnecting over'));
    assert.equal(await button(), 'Unsubscribe', 'still subscribed');
    await own.startAgain();
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('subscribed over'));
    await own.publish('news', 'after the outage');
    await own.publish('news', 'and another');
    await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 2);
    assert.deepEqual(await page.$$eval('#log pre', (items) => items.map((item) => item.textContent)), ['and another', 'after the outage']);

    // 33 channels are more than the server takes: a 400, for good.
    await page.click('#subscribe-button');
    assert.equal(await state(), 'not subscribed');
    const many = Array.from({ length: 33 }, (_, index) => `c${index}`).join(',');
    await page.fill('#subscribe-form input[name=channels]', many);
    await page.click('#subscribe-button');
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('stopped:'));
    assert.match(await state(), /too_many_channels/);
    assert.equal(await button(), 'Subscribe');
    // Subscribing again works, and each message shows once.
    await page.fill('#subscribe-form input[name=channels]', 'news');
    await page.click('#subscribe-button');
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('subscribed over'));
    await own.publish('news', 'once');
    await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 3);
    await own.publish('news', 'and once more');
    await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 4);
    assert.deepEqual(await page.$$eval('#log pre', (items) => items.map((item) => item.textContent)), [
      'and once more',
      'once',
      'and another',
      'after the outage',
    ]);
    await context.close();
  } finally {
    await own.stop();
  }
});

test('with a server that asks for a token, the token field carries one to every request the page makes', async () => {
  const dir = dataDir();
  const key = `page-key-${Date.now()}-0123456789`;
  writeFileSync(join(dir, 'api-keys'), `${key}\n`);
  const own = await Comet.start(['--data-dir', join(dir, 'data'), '--api-keys-file', join(dir, 'api-keys')]);
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    const page = await pageAt(context, `${own.base}/`);
    const text = (selector) => page.$eval(selector, (node) => node.textContent);

    // Without a token: refused, and the page says so.
    await page.click('#publish-form button');
    await page.waitForFunction(() => document.querySelector('#publish-result').textContent.startsWith('not published'));
    assert.match(await text('#publish-result'), /unauthorized/);
    await page.click('#subscribe-button');
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('stopped:'));
    assert.match(await text('#subscription-state'), /unauthorized/);

    // With one: subscribe, publish, see it arrive, and the channel list.
    await page.fill('#token', key);
    await page.press('#token', 'Tab');
    page.problems = [];
    await page.click('#subscribe-button');
    await page.waitForFunction(() => document.querySelector('#subscription-state').textContent === 'subscribed over ws');
    await page.fill('#publish-form textarea', 'with a token');
    await page.click('#publish-form button');
    await page.waitForFunction(() => document.querySelector('#publish-result').textContent.startsWith('published'));
    await page.waitForFunction(() => document.querySelector('#log pre')?.textContent === 'with a token');
    await page.focus('#publish-form input[name=channel]');
    await page.waitForFunction(() => document.querySelector('#known-channels option[value="news"]'), null, {
      timeout: 20000,
    });

    // The token stays for the tab across a reload, and the comparison uses
    // it for all five transports.
    await page.reload();
    assert.equal(await page.inputValue('#token'), key);
    await page.click('.tab[data-view=compare]');
    await page.selectOption('#compare-form select[name=interval]', '200');
    await page.click('#compare-button');
    await page.waitForFunction(
      () => [...document.querySelectorAll('dd[data-key=messages]')].every((value) => Number(value.textContent) >= 3),
      null,
      { timeout: 20000 },
    );
    assert.match(await text('#compare-state'), /^publishing to compare/);
    await page.click('#compare-button');
    assert.deepEqual(page.problems, []);
    await context.close();
  } finally {
    await own.stop();
  }
});

test('the channel list is asked for at most once every few seconds, and catches up', async () => {
  const context = await browser.newContext();
  const page = await openPage(context);
  const asked = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/channels') asked.push(Date.now());
  });
  // The channel is published once the first list is answered: published
  // while that request is in flight, it could be in the first answer.
  const firstList = page.waitForResponse((response) => new URL(response.url()).pathname === '/channels');
  await page.goto(`${comet.base}/`);
  await firstList;
  assert.equal(asked.length, 1, 'the list asked for at start');
  await comet.publish('fresh-channel', 'x');
  for (let round = 0; round < 10; round += 1) {
    await page.focus('#publish-form input[name=channel]');
    await page.focus('#publish-form textarea');
  }
  await page.waitForFunction(() => document.querySelector('#known-channels option[value="fresh-channel"]'), null, {
    timeout: 20000,
  });
  assert.equal(asked.length, 2, 'ten focuses ask once more');
  assert.ok(asked[1] - asked[0] >= 2900, `${asked[1] - asked[0]} ms apart`);
  await context.close();
});

test('the page needs nothing from elsewhere', async () => {
  const context = await browser.newContext();
  const page = await openPage(context);
  const foreign = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(comet.base) && !request.url().startsWith('data:')) foreign.push(request.url());
  });
  await page.goto(`${comet.base}/`);
  await page.waitForLoadState('networkidle');
  assert.deepEqual(foreign, [], 'no CDN, no fonts, no third-party requests');
  await context.close();
});
