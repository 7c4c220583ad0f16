// The built-in page at / in headless Chromium: it renders, subscribes,
// publishes and shows what arrives; the comparison view runs all four
// transports side by side; it fits a phone; and it logs no errors.
// Screenshots are saved under target/browser/ with the test output.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Comet, launch, pageAt, root } from './harness.mjs';

const shots = join(root, 'target/browser');
let browser;
let comet;
before(async () => {
  mkdirSync(shots, { recursive: true });
  browser = await launch();
  comet = await Comet.start(['--memory']);
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
  await page.waitForFunction(() => document.querySelector('#subscription-state').textContent.startsWith('subscribed'));

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

test('the comparison view shows all four transports live', async () => {
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
  assert.deepEqual(cards.map((card) => card.transport), ['sse', 'stream', 'longpoll', 'poll']);
  for (const card of cards) {
    assert.ok(card.requests >= 1, `${card.transport} counts requests`);
    assert.match(card.bytes, /\d+(\.\d+)? (B|KiB|MiB)$/, `${card.transport} counts bytes`);
    assert.match(card.median, /^\d+ ms$/, `${card.transport} measures latency`);
  }
  // Polling costs one request per answer; streams keep one open.
  const byTransport = Object.fromEntries(cards.map((card) => [card.transport, card.requests]));
  assert.ok(byTransport.poll > byTransport.sse, 'short polling makes more requests than SSE');
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

test('the page needs nothing from elsewhere', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const foreign = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(comet.base) && !request.url().startsWith('data:')) foreign.push(request.url());
  });
  await page.goto(`${comet.base}/`);
  await page.waitForLoadState('networkidle');
  assert.deepEqual(foreign, [], 'no CDN, no fonts, no third-party requests');
  await context.close();
});
