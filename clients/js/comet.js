// comet.js: the browser client for Comet. An ES module with no
// dependencies and no build step; served by every Comet server at
// /comet.js, with types at /comet.d.ts.
//
//   import { subscribe } from '/comet.js';
//   const sub = subscribe('news,sport', { transport: 'auto' });
//   sub.addEventListener('message', (e) => console.log(e.channel, e.data, e.lastEventId));
//   sub.addEventListener('gap', (e) => console.warn('missed messages of', e.channel));
//   sub.close();
//
// How it works. A subscription keeps one cursor: the id of the last message
// it delivered (or, before the first, the server's "now", learned with one
// short poll). Every transport starts from that cursor, so a reconnection
// or a change of transport neither loses nor repeats a message; ids are
// also compared on delivery, and an id at or before the last one delivered
// is dropped.
//
// Transports, best first: 'sse' (the browser's EventSource), 'stream' (HTTP
// streaming: fetch streams, or XHR at readyState 3 slicing off what it
// already read), 'longpoll', 'poll'. With transport 'auto' the client starts
// with the best one the browser has and moves down when it is unavailable
// or keeps failing (for example behind a proxy that buffers streams: no
// bytes arrive). Errors that retrying cannot fix (a 4xx answer) end the
// subscription with an 'error' event.

const TRANSPORTS = ['sse', 'stream', 'longpoll', 'poll'];

const DEFAULTS = {
  server: '',
  transport: 'auto',
  since: undefined,
  backlog: undefined,
  share: false,
  streamVia: 'auto',
  retry: 1000,
  maxRetry: 30000,
  longPollWait: 25,
  pollInterval: 2000,
  openTimeout: 10000,
  failuresBeforeFallback: 3,
};

// Event types that describe the subscription itself, not messages.
const OWN_EVENTS = new Set(['open', 'error', 'gap', 'transport']);

/** Starts a subscription to `channels` (a comma-separated string or an array). */
export function subscribe(channels, options = {}) {
  return new Subscription(channels, options);
}

/** A subscription. Dispatches one event per message (its type is the
 * message's event type, `message` by default), `gap`, `open`, `transport`
 * and `error`. */
export class Subscription extends EventTarget {
  constructor(channels, options = {}) {
    super();
    const list = Array.isArray(channels) ? channels : String(channels).split(',');
    this.channels = list.map((c) => c.trim()).filter(Boolean).join(',');
    this.options = { ...DEFAULTS, ...options };
    if (this.options.transport !== 'auto' && !TRANSPORTS.includes(this.options.transport)) {
      throw new TypeError(`unknown transport ${this.options.transport}`);
    }
    this.server = (this.options.server || globalThis.location?.origin || '').replace(/\/$/, '');
    /** The id (or cursor) the subscription resumes after. */
    this.cursor = this.options.since ?? null;
    /** The transport in use: 'sse' | 'stream' | 'longpoll' | 'poll'. */
    this.transport = null;
    /** What the subscription cost: requests made, body bytes received
     * (estimated for SSE, whose bytes the browser does not expose), and
     * messages delivered. */
    this.stats = { requests: 0, bytes: 0, messages: 0 };
    this.closed = false;
    this._order = this.options.transport === 'auto' ? TRANSPORTS : [this.options.transport];
    this._types = new Set(['message']);
    this._worker = null;
    this._last = positionOf(this.cursor);
    this._channel = null;
    this._release = null;
    this._leader = false;
    queueMicrotask(() => this._begin());
  }

  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (!OWN_EVENTS.has(type) && !this._types.has(type)) {
      this._types.add(type);
      this._worker?.listen?.(type);
    }
  }

  /** Stops everything: no request is made after this. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this._worker?.stop();
    this._worker = null;
    this._release?.();
    this._channel?.close();
  }

  async _begin() {
    // Without `since` or `backlog`, "now" is fixed first: every transport
    // starts from it, so nothing published from here on can be missed.
    let failures = 0;
    while (!this.closed && this.cursor === null && this.options.backlog === undefined) {
      try {
        const answer = await this._poll(0);
        this.cursor = answer.cursor;
        this._last = positionOf(this.cursor);
      } catch (error) {
        if (error instanceof FatalError) return this._fail(error);
        await sleep(this._retryDelay(++failures));
      }
    }
    if (this.closed) return;
    if (this.options.share && typeof BroadcastChannel !== 'undefined' && globalThis.navigator?.locks) {
      this._beginShared();
    } else {
      this._use(0);
    }
  }

  // Tabs that share: one of them (the holder of a Web Lock) connects and
  // passes what it receives to the others over a BroadcastChannel. When it
  // goes away, the lock passes to another tab, which connects from its own
  // cursor, so nothing is lost.
  _beginShared() {
    const key = `comet:${this.server}|${this.channels}|${this.options.transport}`;
    this._channel = new BroadcastChannel(key);
    this._channel.onmessage = (event) => {
      if (!this._leader) this._deliver(event.data, false);
    };
    navigator.locks.request(key, () => {
      if (this.closed) return undefined;
      this._leader = true;
      this._use(0);
      return new Promise((resolve) => {
        this._release = resolve;
      });
    });
    // Another tab holds the connection: this one receives through it from
    // now on, which is what 'open' announces.
    navigator.locks.query().then(({ held }) => {
      if (!this.closed && !this._leader && held.some((lock) => lock.name === key)) {
        this.dispatchEvent(new Event('open'));
      }
    });
  }

  _use(index) {
    this._worker?.stop();
    const name = this._order[index];
    this._index = index;
    this.transport = name;
    this._worker = new WORKERS[name](this);
    this.dispatchEvent(Object.assign(new Event('transport'), { transport: name }));
    this._worker.start();
  }

  // The worker cannot do its job (unavailable, or failing again and again):
  // move to the next transport, or, with none left, ask the server with a
  // poll whether retrying can help, and retry the same one if it can.
  async _unusable(worker, reason) {
    if (worker !== this._worker || this.closed) return;
    const next = this._index + 1;
    if (next < this._order.length) {
      console.info(`comet: ${this.transport} unusable (${reason}); trying ${this._order[next]}`);
      this._use(next);
      return;
    }
    worker.stop();
    this._failures = (this._failures ?? 0) + 1;
    try {
      await this._poll(0);
    } catch (error) {
      if (error instanceof FatalError) return this._fail(error);
    }
    await sleep(this._retryDelay(this._failures));
    if (worker === this._worker && !this.closed) this._use(this._index);
  }

  _fail(error) {
    if (this.closed) return;
    this.dispatchEvent(Object.assign(new Event('error'), { message: error.message, status: error.status }));
    this.close();
  }

  _opened(worker) {
    if (worker !== this._worker) return;
    this._failures = 0;
    this.dispatchEvent(new Event('open'));
  }

  _retryDelay(failures) {
    const base = Math.min(this.options.maxRetry, this.options.retry * 2 ** Math.min(failures - 1, 16));
    return base * (1 + Math.random() / 2);
  }

  // One delivery: a message or a gap. `fromHere` items are passed on to the
  // other tabs when this one connects for them.
  _deliver(item, fromHere = true, worker = this._worker) {
    if (this.closed || (fromHere && worker !== this._worker)) return;
    if (item.kind === 'message') {
      const position = positionOf(item.id);
      if (position && this._last && position.epoch === this._last.epoch && position.seq <= this._last.seq) {
        return; // delivered already
      }
      this._last = position ?? this._last;
      this.cursor = item.id;
      this.options.backlog = undefined;
      this.stats.messages += 1;
      const event = new MessageEvent(item.event, { data: item.data, lastEventId: item.id });
      event.channel = item.channel;
      if (fromHere && this._leader) this._channel.postMessage(item);
      this.dispatchEvent(event);
    } else if (item.kind === 'gap') {
      if (fromHere && this._leader) this._channel.postMessage(item);
      this.dispatchEvent(Object.assign(new Event('gap'), { channel: item.channel, reason: item.reason }));
    } else if (item.kind === 'cursor') {
      this.cursor = item.cursor;
      const position = positionOf(item.cursor);
      if (position && (!this._last || position.epoch !== this._last.epoch || position.seq > this._last.seq)) {
        this._last = position;
      }
    }
  }

  _url(kind, extra = {}) {
    const query = new URLSearchParams();
    if (this.cursor !== null) query.set('since', this.cursor);
    else if (this.options.backlog !== undefined) query.set('backlog', String(this.options.backlog));
    for (const [key, value] of Object.entries(extra)) query.set(key, value);
    const text = query.toString();
    return `${this.server}/${kind}/${this.channels}${text ? `?${text}` : ''}`;
  }

  // One poll; resolves with the parsed answer. Throws FatalError for answers
  // retrying cannot fix, Error for the rest.
  async _poll(wait, signal) {
    const url = this._url('poll', wait > 0 ? { wait: String(wait) } : {});
    this.stats.requests += 1;
    const response = await fetch(url, { cache: 'no-store', signal });
    const text = await response.text();
    this.stats.bytes += byteLength(text);
    if (!response.ok) throw httpError(response.status, text);
    return JSON.parse(text);
  }

  _deliverAnswer(answer, worker) {
    for (const gap of answer.gaps ?? []) this._deliver({ kind: 'gap', ...gap }, true, worker);
    for (const message of answer.messages) this._deliver({ kind: 'message', ...message }, true, worker);
    this._deliver({ kind: 'cursor', cursor: answer.cursor }, true, worker);
  }
}

class FatalError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// 4xx answers (except 408 and 429) will not change by retrying.
function httpError(status, text) {
  let message = `HTTP ${status}`;
  try {
    const body = JSON.parse(text);
    if (body.message) message = `${body.error}: ${body.message}`;
  } catch {
    // not a Comet error body
  }
  return status >= 400 && status < 500 && status !== 408 && status !== 429
    ? new FatalError(message, status)
    : new Error(message);
}

// `{epoch}-{seq}` of an id or cursor, or null.
function positionOf(id) {
  const match = /^([0-9a-z]+)-(\d+)(?:\/|$)/.exec(id ?? '');
  return match ? { epoch: match[1], seq: BigInt(match[2]) } : null;
}

function channelOf(id) {
  const slash = id.indexOf('/');
  return slash >= 0 ? id.slice(slash + 1) : '';
}

const encoder = typeof TextEncoder !== 'undefined' ? new TextEncoder() : null;
function byteLength(text) {
  return encoder ? encoder.encode(text).length : text.length;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// What an SSE frame of this message takes on the wire (the browser does not
// expose the bytes of an EventSource).
function sseFrameLength(type, data, id) {
  const lines = data.split('\n').reduce((sum, line) => sum + 6 + byteLength(line) + (line ? 1 : 0), 0);
  return 5 + byteLength(id) + (type === 'message' ? 0 : 8 + byteLength(type)) + lines + 1;
}

// --- Server-Sent Events, with the browser's own EventSource -------------
class SseWorker {
  constructor(sub) {
    this.sub = sub;
    this.source = null;
    this.failures = 0;
    this.timer = null;
    this.onEvent = (event) => this.event(event);
  }

  start() {
    if (typeof EventSource === 'undefined') {
      this.sub._unusable(this, 'EventSource is not available');
      return;
    }
    const sub = this.sub;
    this.source = new EventSource(sub._url('sse'));
    sub.stats.requests += 1;
    for (const type of sub._types) this.source.addEventListener(type, this.onEvent);
    this.source.addEventListener('comet-gap', (event) => {
      try {
        sub._deliver({ kind: 'gap', ...JSON.parse(event.data) }, true, this);
      } catch {
        // a malformed gap signal carries nothing to deliver
      }
    });
    this.source.onopen = () => {
      clearTimeout(this.timer);
      this.failures = 0;
      sub._opened(this);
    };
    this.source.onerror = () => {
      if (!this.source) return;
      if (this.source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status or a wrong content type):
        // another transport will see, and report, what the server says.
        this.sub._unusable(this, 'the server refused the event stream');
        return;
      }
      sub.stats.requests += 1;
      if (++this.failures >= sub.options.failuresBeforeFallback) {
        this.sub._unusable(this, `${this.failures} failed connections`);
      }
    };
    this.timer = setTimeout(
      () => this.sub._unusable(this, 'no answer in time'),
      sub.options.openTimeout,
    );
  }

  listen(type) {
    this.source?.addEventListener(type, this.onEvent);
  }

  event(event) {
    this.failures = 0;
    this.sub.stats.bytes += sseFrameLength(event.type, event.data, event.lastEventId);
    this.sub._deliver(
      {
        kind: 'message',
        id: event.lastEventId,
        channel: channelOf(event.lastEventId),
        event: event.type,
        data: event.data,
      },
      true,
      this,
    );
  }

  stop() {
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }
}

// --- HTTP streaming (NDJSON): fetch streams, or XHR at readyState 3 -----
class StreamWorker {
  constructor(sub) {
    this.sub = sub;
    this.stopped = false;
    this.failures = 0;
    this.abort = null;
  }

  start() {
    if (!this.canFetchStream() && typeof XMLHttpRequest === 'undefined') {
      this.sub._unusable(this, 'neither fetch streams nor XMLHttpRequest is available');
      return;
    }
    this.run();
  }

  canFetchStream() {
    return (
      this.sub.options.streamVia !== 'xhr' &&
      typeof fetch !== 'undefined' &&
      typeof ReadableStream !== 'undefined' &&
      typeof TextDecoder !== 'undefined'
    );
  }

  async run() {
    const sub = this.sub;
    while (!this.stopped) {
      let received = false;
      try {
        received = this.canFetchStream() ? await this.viaFetch() : await this.viaXhr();
      } catch (error) {
        if (error instanceof FatalError) return sub._fail(error);
        if (error.unusable) return sub._unusable(this, error.message);
      }
      if (this.stopped) return;
      this.failures = received ? 0 : this.failures + 1;
      if (this.failures >= sub.options.failuresBeforeFallback) {
        return sub._unusable(this, `${this.failures} connections without data`);
      }
      await sleep(sub._retryDelay(Math.max(this.failures, 1)));
    }
  }

  // Feeds a decoded piece of the stream; returns what is left of a line.
  lines(pending, text) {
    const all = pending + text;
    const parts = all.split('\n');
    const rest = parts.pop();
    for (const line of parts) {
      if (!line) continue;
      const value = JSON.parse(line);
      if (value.id !== undefined) this.sub._deliver({ kind: 'message', ...value }, true, this);
      else if (value.gap) this.sub._deliver({ kind: 'gap', ...value.gap }, true, this);
    }
    return rest;
  }

  // Resolves with whether any message or heartbeat arrived.
  async viaFetch() {
    const sub = this.sub;
    this.abort = new AbortController();
    const firstBytes = setTimeout(() => this.abort.abort(new Error('no bytes in time')), sub.options.openTimeout);
    sub.stats.requests += 1;
    let received = false;
    try {
      const response = await fetch(sub._url('stream'), { cache: 'no-store', signal: this.abort.signal });
      if (!response.ok) throw httpError(response.status, await response.text());
      if (!(response.headers.get('content-type') ?? '').startsWith('application/x-ndjson')) {
        throw Object.assign(new Error('not an NDJSON stream'), { unusable: true });
      }
      sub._opened(this);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) break;
        if (!received) clearTimeout(firstBytes);
        received = true;
        sub.stats.bytes += value.byteLength;
        pending = this.lines(pending, decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      if (error instanceof FatalError || error.unusable) throw error;
      if (!received && this.abort.signal.aborted && !this.stopped) {
        throw Object.assign(new Error('no bytes arrived: is a proxy buffering the stream?'), { unusable: true });
      }
    } finally {
      clearTimeout(firstBytes);
    }
    return received;
  }

  // XHR at readyState 3: the response grows; slice off what was read. A
  // long-lived XHR keeps its whole text, so the connection is renewed (from
  // the cursor) once it holds a few MiB.
  viaXhr() {
    const sub = this.sub;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      let seen = 0;
      let pending = '';
      let received = false;
      const firstBytes = setTimeout(() => {
        xhr.abort();
        reject(Object.assign(new Error('no bytes arrived: is a proxy buffering the stream?'), { unusable: true }));
      }, sub.options.openTimeout);
      const consume = () => {
        const text = xhr.responseText;
        if (text.length > seen) {
          if (!received) {
            clearTimeout(firstBytes);
            sub._opened(this);
          }
          received = true;
          const piece = text.slice(seen);
          seen = text.length;
          sub.stats.bytes += byteLength(piece);
          try {
            pending = this.lines(pending, piece);
          } catch (error) {
            xhr.abort();
            reject(error);
            return;
          }
          if (seen > 4 * 1024 * 1024) xhr.abort();
        }
      };
      xhr.onreadystatechange = () => {
        if (xhr.readyState === 2 && xhr.status !== 200) {
          clearTimeout(firstBytes);
        }
        if (xhr.readyState >= 3 && xhr.status === 200) consume();
        if (xhr.readyState === 4) {
          clearTimeout(firstBytes);
          if (xhr.status !== 200 && xhr.status !== 0) reject(httpError(xhr.status, xhr.responseText));
          else resolve(received);
        }
      };
      xhr.onabort = () => {
        clearTimeout(firstBytes);
        resolve(received);
      };
      xhr.open('GET', sub._url('stream'));
      sub.stats.requests += 1;
      xhr.send();
    });
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
    this.xhr?.abort();
  }
}

// --- Long polling and short polling -------------------------------------
class PollWorker {
  constructor(sub, wait) {
    this.sub = sub;
    this.wait = wait;
    this.stopped = false;
    this.failures = 0;
    this.abort = null;
  }

  start() {
    this.run();
  }

  async run() {
    const sub = this.sub;
    let first = true;
    while (!this.stopped) {
      this.abort = new AbortController();
      const limit = setTimeout(() => this.abort.abort(), (this.wait + sub.options.openTimeout / 1000) * 1000);
      // A long poll is held until there is news: it counts as open once on
      // its way (the cursor is fixed, so nothing published meanwhile is
      // missed). A short poll is open once answered.
      if (first && this.wait > 0) sub._opened(this);
      try {
        const answer = await sub._poll(this.wait, this.abort.signal);
        if (this.stopped) return;
        if (first && this.wait === 0) sub._opened(this);
        first = false;
        this.failures = 0;
        sub._deliverAnswer(answer, this);
        if (this.wait === 0 && answer.messages.length === 0) await sleep(sub.options.pollInterval);
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof FatalError) return sub._fail(error);
        this.failures += 1;
        if (this.wait > 0 && this.failures >= sub.options.failuresBeforeFallback) {
          return sub._unusable(this, `${this.failures} failed polls`);
        }
        await sleep(sub._retryDelay(this.failures));
      } finally {
        clearTimeout(limit);
      }
    }
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
  }
}

const WORKERS = {
  sse: SseWorker,
  stream: StreamWorker,
  longpoll: class extends PollWorker {
    constructor(sub) {
      super(sub, sub.options.longPollWait);
    }
  },
  poll: class extends PollWorker {
    constructor(sub) {
      super(sub, 0);
    }
  },
};

/** Publishes `data` to `channel`; resolves with `{channel, id, subscribers}`. */
export async function publish(channel, data, { server = '', event } = {}) {
  const base = (server || globalThis.location?.origin || '').replace(/\/$/, '');
  const query = event ? `?event=${encodeURIComponent(event)}` : '';
  const response = await fetch(`${base}/pub/${channel}${query}`, {
    method: 'POST',
    body: typeof data === 'string' ? data : JSON.stringify(data),
  });
  const text = await response.text();
  if (response.status !== 201) throw httpError(response.status, text);
  return JSON.parse(text);
}
