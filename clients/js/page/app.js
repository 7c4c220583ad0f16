// The built-in page: subscribe and publish by hand ("Live"), and one channel
// over all five transports side by side ("Compare transports"). It uses
// comet.js exactly as any page would.
import { publish, subscribe } from '/comet.js';

const $ = (selector) => document.querySelector(selector);

// ---- tabs ----------------------------------------------------------------
for (const tab of document.querySelectorAll('.tab')) {
  tab.addEventListener('click', () => {
    for (const other of document.querySelectorAll('.tab')) {
      other.setAttribute('aria-selected', String(other === tab));
    }
    for (const view of document.querySelectorAll('.view')) {
      view.hidden = view.id !== tab.dataset.view;
    }
  });
}

// ---- known channels, for the pickers ------------------------------------
// Asked for at most once every few seconds: a request asked for sooner is
// made when that time is up, so the list still catches up.
const REFRESH_EVERY = 3000;
let lastRefresh = -Infinity;
let refreshTimer = null;

function refreshChannels() {
  if (refreshTimer !== null) return;
  const wait = lastRefresh + REFRESH_EVERY - Date.now();
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    lastRefresh = Date.now();
    loadChannels();
  }, Math.max(0, wait));
}

async function loadChannels() {
  try {
    const current = token();
    const headers = current ? { Authorization: `Bearer ${current}` } : {};
    const response = await fetch('/channels?limit=200', { cache: 'no-store', headers });
    if (!response.ok) return;
    const { channels } = await response.json();
    const list = $('#known-channels');
    list.replaceChildren(
      ...channels.map(({ channel }) => Object.assign(document.createElement('option'), { value: channel })),
    );
  } catch {
    // the list is a convenience; the fields accept any name
  }
}
refreshChannels();
for (const input of document.querySelectorAll('input[list="known-channels"]')) {
  input.addEventListener('focus', refreshChannels);
}

// ---- token ------------------------------------------------------------------
// An API key or a JWT for a server that asks for one, sent with every
// request the page makes from then on (a subscription already open keeps
// the token it started with). Kept for this tab only, across reloads.
const tokenInput = $('#token');
tokenInput.value = sessionStorage.getItem('comet-token') ?? '';
tokenInput.addEventListener('change', () => {
  sessionStorage.setItem('comet-token', tokenInput.value.trim());
  // The channels a token may see differ: ask again at once.
  lastRefresh = -Infinity;
  refreshChannels();
});

function token() {
  return tokenInput.value.trim() || undefined;
}

// ---- live ----------------------------------------------------------------
let live = null;
const log = $('#log');
const MAX_LOG = 200;

function addLogEntry(entry) {
  log.prepend(entry);
  while (log.children.length > MAX_LOG) log.lastElementChild.remove();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showMessage(event) {
  const item = element('li');
  const meta = element('span', 'meta', new Date().toLocaleTimeString());
  const channel = element('span', 'channel', event.channel);
  if (event.type !== 'message') channel.append(' ', element('span', 'type', event.type));
  item.append(meta, channel, element('pre', '', event.data), element('span', 'id', event.lastEventId));
  addLogEntry(item);
}

function showGap(event) {
  const item = element('li', 'gap');
  item.append(
    element('span', 'meta', new Date().toLocaleTimeString()),
    element('span', 'channel', event.channel),
    element('pre', '', `messages were missed (${event.reason === 'trimmed' ? 'no longer in history' : 'history was reset'})`),
  );
  addLogEntry(item);
}

// `open`, `error` and `comet-…` are the subscription's own events, never
// message types (the server refuses to publish them).
function isMessageType(type) {
  return type !== 'open' && type !== 'error' && !type.startsWith('comet-');
}

function listenTo(subscription, type) {
  if (isMessageType(type)) subscription.addEventListener(type, showMessage);
}

function stopLive(text) {
  live?.close();
  live = null;
  $('#subscribe-button').textContent = 'Subscribe';
  $('#subscription-state').textContent = text;
}

function showState(subscription, transport = subscription.transport) {
  const state = $('#subscription-state');
  if (subscription.readyState === subscription.OPEN) state.textContent = `subscribed over ${transport}`;
  else state.textContent = `connecting over ${transport}…`;
}

$('#subscribe-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.target;
  if (live) {
    stopLive('not subscribed');
    return;
  }
  const subscription = subscribe(form.channels.value, { transport: form.transport.value, token: token() });
  live = subscription;
  listenTo(subscription, 'message');
  for (const type of form.types.value.split(',').map((t) => t.trim()).filter(Boolean)) {
    listenTo(subscription, type);
  }
  subscription.addEventListener('comet-gap', showGap);
  subscription.addEventListener('comet-transport', (change) => showState(subscription, change.transport));
  subscription.addEventListener('open', () => showState(subscription));
  subscription.addEventListener('error', (error) => {
    if (subscription !== live) return;
    if (subscription.readyState === subscription.CLOSED) {
      stopLive(`stopped: ${error.message}`);
    } else {
      $('#subscription-state').textContent = `reconnecting over ${subscription.transport ?? '…'} (${error.message})`;
    }
  });
  $('#subscribe-button').textContent = 'Unsubscribe';
});

$('#publish-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  const result = $('#publish-result');
  const type = form.event.value.trim();
  // Show messages of a type published from here.
  if (live && type && type !== 'message') listenTo(live, type);
  try {
    const answer = await publish(form.channel.value, form.data.value, { event: type || undefined, token: token() });
    result.textContent = `published ${answer.id} (${answer.subscribers} subscriber${answer.subscribers === 1 ? '' : 's'})`;
    refreshChannels();
  } catch (error) {
    result.textContent = `not published: ${error.message}`;
  }
});

// ---- compare transports -----------------------------------------------------
const TRANSPORTS = ['ws', 'sse', 'stream', 'longpoll', 'poll'];
const HISTORY = 60;
let comparison = null;

function card(transport) {
  const article = document.querySelector(`.card[data-transport="${transport}"]`);
  if (!article.querySelector('dl')) {
    const list = element('dl');
    for (const [key, label] of [
      ['requests', 'HTTP requests'],
      ['bytes', 'bytes received'],
      ['messages', 'messages'],
      ['last', 'latency, last'],
      ['median', 'latency, median'],
      ['max', 'latency, max'],
    ]) {
      const value = element('dd', '', '–');
      value.dataset.key = key;
      list.append(element('dt', '', label), value);
    }
    const canvas = element('canvas');
    canvas.setAttribute('aria-label', 'latency of the latest messages');
    article.append(list, canvas);
  }
  return article;
}

function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(2)} MiB`;
}

// A small line chart of the latest latencies, newest on the right.
function draw(canvas, latencies) {
  const ratio = globalThis.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, width, height);
  const styles = getComputedStyle(document.documentElement);
  context.strokeStyle = styles.getPropertyValue('--line').trim() || '#ccc';
  context.lineWidth = ratio;
  context.beginPath();
  context.moveTo(0, height - ratio);
  context.lineTo(width, height - ratio);
  context.stroke();
  if (latencies.length === 0) return;
  const top = Math.max(...latencies, 1);
  const step = width / (HISTORY - 1);
  const pad = 14 * ratio;
  context.strokeStyle = styles.getPropertyValue('--accent').trim() || '#3b5bdb';
  context.lineWidth = 2 * ratio;
  context.beginPath();
  latencies.forEach((value, index) => {
    const x = width - (latencies.length - 1 - index) * step;
    const y = height - ratio - (value / top) * (height - pad - ratio);
    if (index === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
  context.fillStyle = styles.getPropertyValue('--muted').trim() || '#777';
  context.font = `${10 * ratio}px system-ui, sans-serif`;
  context.fillText(`max ${Math.round(top)} ms`, 2 * ratio, 10 * ratio);
}

function render() {
  if (!comparison) return;
  for (const transport of TRANSPORTS) {
    const { subscription, latencies } = comparison.lanes[transport];
    const article = card(transport);
    const value = (key) => article.querySelector(`dd[data-key="${key}"]`);
    value('requests').textContent = String(subscription.stats.requests);
    // The browser does not expose the bytes of an EventSource or a WebSocket.
    const approximate = transport === 'sse' || transport === 'ws' ? '≈ ' : '';
    value('bytes').textContent = approximate + formatBytes(subscription.stats.bytes);
    value('messages').textContent = String(subscription.stats.messages);
    const last = latencies.at(-1);
    value('last').textContent = last === undefined ? '–' : `${last} ms`;
    const middle = median(latencies);
    value('median').textContent = middle === null ? '–' : `${middle} ms`;
    value('max').textContent = latencies.length ? `${Math.max(...latencies)} ms` : '–';
    draw(article.querySelector('canvas'), latencies);
  }
}

// What the comparison that `publisher` belongs to is doing, unless it was
// stopped meanwhile.
function showComparisonState(publisher, text) {
  if (comparison?.publisher === publisher) $('#compare-state').textContent = text;
}

function startComparison(channel, interval) {
  const lanes = {};
  for (const transport of TRANSPORTS) {
    const subscription = subscribe(channel, { transport, pollInterval: 1000, token: token() });
    const latencies = [];
    subscription.addEventListener('message', (event) => {
      try {
        const { t } = JSON.parse(event.data);
        if (typeof t === 'number') {
          latencies.push(Math.max(0, Date.now() - t));
          if (latencies.length > HISTORY) latencies.shift();
        }
      } catch {
        // a message published by someone else: counted, not timed
      }
    });
    lanes[transport] = { subscription, latencies };
    card(transport);
  }
  let n = 0;
  const publisher = setInterval(() => {
    publish(channel, { t: Date.now(), n: n++ }, { token: token() }).then(
      () => showComparisonState(publisher, `publishing to ${channel}`),
      (error) => showComparisonState(publisher, `not published: ${error.message}`),
    );
  }, interval);
  const painter = setInterval(render, 250);
  return { lanes, publisher, painter };
}

$('#compare-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.target;
  const state = $('#compare-state');
  if (comparison) {
    clearInterval(comparison.publisher);
    clearInterval(comparison.painter);
    for (const { subscription } of Object.values(comparison.lanes)) subscription.close();
    comparison = null;
    $('#compare-button').textContent = 'Start';
    state.textContent = 'stopped';
    return;
  }
  comparison = startComparison(form.channel.value, Number(form.interval.value));
  $('#compare-button').textContent = 'Stop';
  state.textContent = `publishing to ${form.channel.value}`;
});

for (const transport of TRANSPORTS) card(transport);
