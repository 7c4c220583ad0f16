// comet.js: the browser client for Comet. An ES module with no
// dependencies and no build step; served by every Comet server at
// /comet.js, with types at /comet.d.ts.
//
//   import { subscribe, publish } from '/comet.js';
//   const sub = subscribe('news,sport', { transport: 'auto' });
//   sub.addEventListener('message', (e) => console.log(e.channel, e.data, e.lastEventId));
//   sub.addEventListener('comet-gap', (e) => console.warn('missed messages of', e.channel));
//   sub.close();
//   await publish('news', { hello: 'world' });
//
// A subscription can stand in for an EventSource: `onopen`, `onmessage`,
// `onerror`, `readyState` (CONNECTING, OPEN, CLOSED), `url`,
// `withCredentials` and `close()` behave as EventSource's do.
//
// Events. The subscription's own events are `open` (connected), `error`
// (the connection was lost and is being retried: readyState CONNECTING; or
// the subscription ended for good: readyState CLOSED, with `status`),
// `comet-gap` (messages were missed), `comet-transport` (the transport
// changed) and `comet-token` (the token was renewed). Every other type is a
// message type: `message`, or what the publisher gave with `?event=`. The
// server refuses to publish `error`, `open` and `comet-…`; a message of
// such a type from older history is never dispatched (it is counted in
// `stats.skipped`).
//
// Durations. Every duration option is in milliseconds: retry (1000) and
// maxRetry (30000), the reconnection backoff; longPollWait (25000; sent to
// the server as whole seconds); pollInterval (2000); openTimeout (10000);
// idleTimeout (45000: three of the server's default 15 s heartbeats);
// climbBackAfter (60000). publish() takes `timeout` in milliseconds too.
//
// How it works. A subscription keeps one cursor: the id of the last message
// it delivered (or, before the first, the server's "now", learned with one
// short poll). Every transport starts from that cursor, so a reconnection
// or a change of transport neither loses nor repeats a message; ids are
// also compared on delivery, and an id at or before the last one delivered
// is dropped.
//
// Transports, best first: 'ws' (the browser's WebSocket, receive-only),
// 'sse' (the browser's EventSource), 'stream' (HTTP streaming: fetch
// streams, or XHR at readyState 3 slicing off what it already read),
// 'longpoll', 'poll'. With transport 'auto' the client starts with the best
// one the browser has and moves down when it is unavailable or keeps
// failing (for example behind a proxy that refuses WebSocket upgrades, or
// one that buffers streams: no bytes arrive); failures while the browser is
// offline do not count. After moving down it tries the best transport again
// every `climbBackAfter` and when the browser comes back online, and stays
// there if it opens. Errors that retrying cannot fix (a 4xx answer) end the
// subscription with an 'error' event and readyState CLOSED.
//
// Why WebSocket first. Browsers open at most six HTTP/1.1 connections per
// origin, and every EventSource or stream holds one for as long as it
// lives: a seventh subscription of the same origin (another tab, another
// widget) waits, and so do the page's own fetches to that server, publish()
// included. WebSockets are not counted in that pool. Where WebSockets are
// broken the cost is small: a proxy that refuses the upgrade fails the
// handshake at once, the one poll that asks the server why is answered,
// and the subscription moves to SSE within a round trip or two; a proxy
// that swallows the upgrade costs `openTimeout` once. A WebSocket that
// opens but then carries nothing is caught by `idleTimeout` like any
// stream. SSE stays next: it needs nothing but plain HTTP.
//
// Tokens. With `token` (an API key or a JWT) and/or `getToken` (an async
// function giving one), every request of the subscription carries the
// current token: `Authorization: Bearer` on fetch and XHR, the `token`
// query parameter on EventSource and WebSocket (which cannot send
// headers). getToken is called at the start (unless `token` is given),
// when the server ends a subscription because its JWT expired (SSE
// `comet-expired`, a stream's `{"expired":true}`, a WebSocket closed with
// 4401, a long poll answered at the JWT's `exp`; a long poll is not sent
// with a JWT about to expire), and when it answers 401; the
// subscription then goes on from its cursor over the same transport,
// dispatching only `comet-token`. A token from getToken
// that is refused at once, or that ends less than half a second after it
// was given, is a failure: the next renewal waits the retry delay (with an
// `error`, readyState CONNECTING), and the third in a row ends the
// subscription (`error`, CLOSED, status 401). Without getToken, an expiry or
// a 401 ends it the same way. A 403 (the token does not grant a channel) is
// never retried (nor is a WebSocket closed with 4403, the authorization
// revoked). `withCredentials: true` sends cookies (the `comet_token`
// cookie) to a server of another origin, as EventSource's option does; a
// WebSocket handshake carries the server's cookies whatever it says (the
// browser gives no choice; the server's --cors-origin list decides which
// pages may open one).
//
// Liveness. Streams carry heartbeats (SSE asks for them as
// `comet-heartbeat` events, which are never dispatched; WebSocket and
// HTTP streaming get `{"heartbeat":true}` objects). An open stream
// that receives nothing at all for `idleTimeout` (a connection that died
// silently: a NAT timeout, a laptop asleep) is dropped and reconnected from
// the cursor. A long poll is abandoned after its wait plus `openTimeout`.

const TRANSPORTS = ['ws', 'sse', 'stream', 'longpoll', 'poll'];

const DEFAULTS = {
  server: '',
  transport: 'auto',
  since: undefined,
  backlog: undefined,
  share: false,
  streamVia: 'auto',
  retry: 1000,
  maxRetry: 30000,
  longPollWait: 25000,
  pollInterval: 2000,
  openTimeout: 10000,
  idleTimeout: 45000,
  climbBackAfter: 60000,
  failuresBeforeFallback: 3,
  token: undefined,
  getToken: undefined,
  withCredentials: false,
};

// readyState, as EventSource's.
const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

// A channel name, as the server accepts it.
const CHANNEL = /^[A-Za-z0-9_.:@~-]{1,200}$/;

// An idempotency key, as the server accepts it: 1 to 255 printable ASCII
// characters (0x21 to 0x7E).
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

// Types the server refuses to publish: the subscription's own events
// (`open`, `error`, `comet-gap`, `comet-transport`, `comet-token`) and
// Comet's signals.
// They are never message types.
function isReservedType(type) {
  return type === 'open' || type === 'error' || type.startsWith('comet-');
}

/** Starts a subscription to `channels` (a comma-separated string or an array). */
export function subscribe(channels, options = {}) {
  return new Subscription(channels, options);
}

/** A subscription. Dispatches one event per message (its type is the
 * message's event type, `message` by default), and its own `open`, `error`,
 * `comet-gap`, `comet-transport` and `comet-token`. */
export class Subscription extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSED = CLOSED;

  constructor(channels, options = {}) {
    super();
    const list = Array.isArray(channels) ? channels : String(channels).split(',');
    this.channels = list.map((c) => c.trim()).filter(Boolean).join(',');
    this.options = { ...DEFAULTS, ...options };
    if (this.options.transport !== 'auto' && !TRANSPORTS.includes(this.options.transport)) {
      throw new TypeError(`unknown transport ${this.options.transport}`);
    }
    this.server = (this.options.server || globalThis.location?.origin || '').replace(/\/$/, '');
    /** The SSE endpoint of the channels, whatever the transport (as EventSource's `url`). */
    this.url = `${this.server}/sse/${this.channels}`;
    /** Whether cookies go to a server of another origin too (they always go to this page's). */
    this.withCredentials = this.options.withCredentials === true;
    /** The id (or cursor) the subscription resumes after. */
    this.cursor = this.options.since ?? null;
    /** The transport in use: 'ws' | 'sse' | 'stream' | 'longpoll' | 'poll'. */
    this.transport = null;
    /** What the subscription cost: requests made (a WebSocket handshake
     * is one), body bytes received (estimated for SSE and WebSocket, whose
     * bytes the browser does not expose),
     * messages delivered, and messages of reserved types skipped. */
    this.stats = { requests: 0, bytes: 0, messages: 0, skipped: 0 };
    this.closed = false;
    this._state = CONNECTING;
    this._token = new TokenKeeper(this, this.options.token, this.options.getToken);
    this._origin = originOf(this.server);
    this._order = this.options.transport === 'auto' ? TRANSPORTS : [this.options.transport];
    this._index = 0;
    this._types = new Set(['message']);
    this._handlers = new Map();
    this._worker = null;
    this._probe = null;
    this._probeIndex = 0;
    this._climbTimer = null;
    this._failures = 0;
    this._last = positionOf(this.cursor);
    this._channel = null;
    this._release = null;
    this._leader = false;
    this._onOnline = () => this._climb();
    globalThis.addEventListener?.('online', this._onOnline);
    queueMicrotask(() => this._begin());
  }

  get CONNECTING() {
    return CONNECTING;
  }

  get OPEN() {
    return OPEN;
  }

  get CLOSED() {
    return CLOSED;
  }

  /** CONNECTING (0) until a transport is open and while reconnecting, OPEN
   * (1) while connected, CLOSED (2) after close() or a refusal. */
  get readyState() {
    return this._state;
  }

  get onopen() {
    return this._handler('open');
  }

  set onopen(handler) {
    this._setHandler('open', handler);
  }

  /** Called for messages of type `message` only, as with EventSource. */
  get onmessage() {
    return this._handler('message');
  }

  set onmessage(handler) {
    this._setHandler('message', handler);
  }

  get onerror() {
    return this._handler('error');
  }

  set onerror(handler) {
    this._setHandler('error', handler);
  }

  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    const name = String(type);
    if (!isReservedType(name) && !this._types.has(name)) {
      this._types.add(name);
      this._worker?.listen?.(name);
      this._probe?.listen?.(name);
    }
  }

  /** Stops everything: no request is made after this. Dispatches nothing. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this._state = CLOSED;
    this._worker?.stop();
    this._worker = null;
    this._dropProbe();
    clearTimeout(this._climbTimer);
    globalThis.removeEventListener?.('online', this._onOnline);
    this._release?.();
    this._channel?.close();
  }

  // --- handler attributes (onopen, onmessage, onerror) ---------------------
  _handler(type) {
    return this._handlers.get(type)?.handler ?? null;
  }

  // As an event handler attribute: the first handler adds one listener,
  // which calls whatever handler is set; null removes it.
  _setHandler(type, value) {
    const handler = typeof value === 'function' ? value : null;
    const entry = this._handlers.get(type);
    if (entry && handler) {
      entry.handler = handler;
    } else if (entry) {
      this.removeEventListener(type, entry.listener);
      this._handlers.delete(type);
    } else if (handler) {
      const added = { handler, listener: (event) => added.handler.call(this, event) };
      this._handlers.set(type, added);
      this.addEventListener(type, added.listener);
    }
  }

  // --- life cycle ------------------------------------------------------------
  async _begin() {
    // The first token, from getToken unless `token` gave it.
    if (this._token.current === null && this._token.renewable()) {
      if (!(await this._token.renew(null, 'start'))) return;
    }
    // Without `since` or `backlog`, "now" is fixed first: every transport
    // starts from it, so nothing published from here on can be missed.
    let failures = 0;
    while (!this.closed && this.cursor === null && this.options.backlog === undefined) {
      const token = this._token.current;
      try {
        const answer = await this._poll(0, undefined, token);
        this.cursor = answer.cursor;
        this._last = positionOf(this.cursor);
      } catch (error) {
        if (await this._renewedAfter(error, token)) continue;
        if (!isRetryable(error)) return this._fail(error);
        this._setConnecting(error.message);
        failures += 1;
        await sleep(this._retryDelay(failures));
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
        this._setOpen();
      }
    });
  }

  _use(index) {
    this._worker?.stop();
    this._dropProbe();
    const name = this._order[index];
    const worker = new WORKERS[name](this);
    this._index = index;
    this.transport = name;
    this._worker = worker;
    this._announceTransport();
    if (worker === this._worker) worker.start();
  }

  _announceTransport() {
    this.dispatchEvent(Object.assign(new Event('comet-transport'), { transport: this.transport }));
  }

  _setOpen() {
    if (this.closed || this._state === OPEN) return;
    this._state = OPEN;
    this.dispatchEvent(new Event('open'));
  }

  // A connection was lost or could not be made, and will be retried.
  _setConnecting(reason) {
    if (this.closed) return;
    this._state = CONNECTING;
    this.dispatchEvent(Object.assign(new Event('error'), { message: reason }));
  }

  // An answer retrying cannot fix: the subscription ends.
  _fail(error) {
    if (this.closed) return;
    this.close();
    this.dispatchEvent(
      Object.assign(new Event('error'), { message: error.message, status: error.status, code: error.code }),
    );
  }

  _online() {
    return globalThis.navigator?.onLine !== false;
  }

  _retryDelay(failures) {
    const base = Math.min(this.options.maxRetry, this.options.retry * 2 ** Math.min(failures - 1, 16));
    return base * (1 + Math.random() / 2);
  }

  // --- what workers report: the transport in use, or a probe of a better one
  _opened(worker) {
    if (worker === this._probe) this._promote(worker);
    if (worker !== this._worker) return;
    this._failures = 0;
    this._setOpen();
  }

  _lost(worker, reason) {
    if (worker === this._probe) return this._probeFailed(reason);
    if (worker !== this._worker) return;
    this._setConnecting(reason);
  }

  _fatal(worker, error) {
    if (worker === this._probe) return this._probeFailed(error.message);
    if (worker !== this._worker) return;
    this._fail(error);
  }

  // The worker cannot do its job (unavailable, or failing again and again):
  // move to the next transport, or, with none left, ask the server with a
  // poll whether retrying can help, and retry the same one if it can.
  async _unusable(worker, reason) {
    if (worker === this._probe) return this._probeFailed(reason);
    if (worker !== this._worker || this.closed) return;
    const next = this._index + 1;
    if (next < this._order.length) {
      console.info(`comet: ${this.transport} unusable (${reason}); trying ${this._order[next]}`);
      this._use(next);
      this._scheduleClimb();
      return;
    }
    worker.stop();
    this._failures += 1;
    const token = this._token.current;
    const verdict = await this._ask(token);
    const renewed = await this._renewedAfter(verdict, token);
    if (verdict && !renewed && !isRetryable(verdict)) return this._fatal(worker, verdict);
    if (!renewed) await sleep(this._retryDelay(this._failures));
    if (worker === this._worker && !this.closed) this._use(this._index);
  }

  // Asks the server with a short poll, carrying `token`, what it says:
  // resolves with null when polls are answered, or with the error.
  async _ask(token) {
    try {
      await this._poll(0, undefined, token);
      return null;
    } catch (error) {
      return error;
    }
  }

  // After a request carrying `token` failed with `error`: whether it was a
  // 401 for which a fresh token is now in place, so the request may be made
  // again at once.
  async _renewedAfter(error, token) {
    if (!(error instanceof HttpError) || error.status !== 401) return false;
    return this._token.renew(token, 'unauthorized');
  }

  // --- climbing back to a better transport ---------------------------------
  // The best transport above the one in use that this browser has, or -1.
  _climbTarget() {
    for (let index = 0; index < this._index; index += 1) {
      if (WORKERS[this._order[index]].available()) return index;
    }
    return -1;
  }

  _scheduleClimb() {
    clearTimeout(this._climbTimer);
    const after = this.options.climbBackAfter;
    if (this.closed || this._climbTarget() < 0 || !(after > 0 && Number.isFinite(after))) return;
    this._climbTimer = setTimeout(() => this._climb(), after);
  }

  // Tries the better transport alongside the one in use, from the same
  // cursor; once it opens it takes over (_promote), and what both deliver
  // is delivered once.
  _climb() {
    if (this.closed || this._probe || !this._worker) return;
    const target = this._climbTarget();
    if (target < 0) return;
    if (!this._online()) return this._scheduleClimb();
    this._probeIndex = target;
    this._probe = new WORKERS[this._order[target]](this);
    this._probe.start();
  }

  _promote(probe) {
    this._worker?.stop();
    this._worker = probe;
    this._probe = null;
    this._index = this._probeIndex;
    this.transport = this._order[this._index];
    console.info(`comet: back on ${this.transport}`);
    this._announceTransport();
    this._scheduleClimb();
  }

  _probeFailed(reason) {
    console.info(`comet: ${this._order[this._probeIndex]} still unusable (${reason})`);
    this._dropProbe();
    this._scheduleClimb();
  }

  _dropProbe() {
    const probe = this._probe;
    this._probe = null;
    probe?.stop();
  }

  // --- delivery --------------------------------------------------------------
  // One delivery: a message, a gap or a cursor. `fromHere` items are passed
  // on to the other tabs when this one connects for them.
  _deliver(item, fromHere = true, worker = this._worker) {
    if (this.closed || (fromHere && worker !== this._worker)) return;
    if (item.kind === 'message') this._deliverMessage(item, fromHere);
    else if (item.kind === 'gap') this._deliverGap(item, fromHere);
    else if (item.kind === 'cursor') this._advance(item.cursor);
  }

  _deliverMessage(item, fromHere) {
    const position = positionOf(item.id);
    if (position && this._last && position.epoch === this._last.epoch && position.seq <= this._last.seq) {
      return; // delivered already
    }
    this._last = position ?? this._last;
    this.cursor = item.id;
    this.options.backlog = undefined;
    if (fromHere && this._leader) this._channel.postMessage(item);
    if (isReservedType(item.event)) {
      this.stats.skipped += 1; // published before the server reserved the type
      return;
    }
    this.stats.messages += 1;
    const event = new MessageEvent(item.event, { data: item.data, lastEventId: item.id, origin: this._origin });
    event.channel = item.channel;
    this.dispatchEvent(event);
  }

  _deliverGap(item, fromHere) {
    if (fromHere && this._leader) this._channel.postMessage(item);
    this.dispatchEvent(Object.assign(new Event('comet-gap'), { channel: item.channel, reason: item.reason }));
  }

  _advance(cursor) {
    this.cursor = cursor;
    const position = positionOf(cursor);
    if (position && (!this._last || position.epoch !== this._last.epoch || position.seq > this._last.seq)) {
      this._last = position;
    }
  }

  // A request's URL: the resume point, then `extra` (e.g. the token for
  // EventSource).
  _url(kind, extra = {}) {
    const query = new URLSearchParams();
    if (this.cursor !== null) query.set('since', this.cursor);
    else if (this.options.backlog !== undefined) query.set('backlog', String(this.options.backlog));
    for (const [key, value] of Object.entries(extra)) query.set(key, value);
    const text = query.toString();
    return `${this.server}/${kind}/${this.channels}${text ? `?${text}` : ''}`;
  }

  // What a fetch of the subscription carries besides its URL: `token`, and
  // cookies as `withCredentials` says.
  _request(token, signal) {
    return {
      cache: 'no-store',
      signal,
      headers: bearer(token),
      credentials: this.withCredentials ? 'include' : 'same-origin',
    };
  }

  // One poll carrying `token`, held up to `wait` ms (0: answered at once);
  // resolves with the parsed answer. Throws HttpError for an error status.
  async _poll(wait, signal, token) {
    const url = this._url('poll', wait > 0 ? { wait: String(Math.ceil(wait / 1000)) } : {});
    this.stats.requests += 1;
    const response = await fetch(url, this._request(token, signal));
    const text = await response.text();
    this.stats.bytes += byteLength(text);
    if (!response.ok) throw httpError(response.status, text);
    this._token.accepted(token);
    return JSON.parse(text);
  }

  _deliverAnswer(answer, worker) {
    for (const gap of answer.gaps ?? []) this._deliver({ kind: 'gap', ...gap }, true, worker);
    for (const message of answer.messages) this._deliver({ kind: 'message', ...message }, true, worker);
    this._deliver({ kind: 'cursor', cursor: answer.cursor }, true, worker);
  }
}

/** An HTTP answer that is not a success: its `status`, the server's error
 * `code` (e.g. `reserved_event`) when it sent one, and the `index` of the
 * message a batch publish was refused for, when the server named one. */
export class HttpError extends Error {
  constructor(message, status, code, index) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.index = index;
  }

  /** Whether the same request may succeed later: every status but a 4xx,
   * and 408 and 429. */
  get retryable() {
    return !(this.status >= 400 && this.status < 500) || this.status === 408 || this.status === 429;
  }
}

function httpError(status, text) {
  let message = `HTTP ${status}`;
  let code;
  let index;
  try {
    const body = JSON.parse(text);
    code = body.error;
    if (Number.isInteger(body.index)) index = body.index;
    if (body.message) message = `${body.error}: ${body.message}`;
  } catch {
    // not a Comet error body
  }
  return new HttpError(message, status, code, index);
}

// Network failures, timeouts and answers like 503 may go away; a 4xx will not.
function isRetryable(error) {
  return !(error instanceof HttpError) || error.retryable;
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

function originOf(server) {
  try {
    return new URL(server).origin;
  } catch {
    return '';
  }
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
  return (id ? 5 + byteLength(id) : 0) + (type === 'message' ? 0 : 8 + byteLength(type)) + lines + 1;
}

// A worker's consecutive failures. All of them lengthen the reconnection
// delay; only those that point at the transport count towards moving down:
// not those while the browser is offline, nor an answer like 503 (the
// server is there, and busy).
class Failures {
  constructor(sub) {
    this.sub = sub;
    this.attempts = 0;
    this.counted = 0;
  }

  add(error) {
    this.attempts += 1;
    if (this.sub._online() && !(error instanceof HttpError)) this.counted += 1;
  }

  reset() {
    this.attempts = 0;
    this.counted = 0;
  }

  tooMany() {
    return this.counted >= this.sub.options.failuresBeforeFallback;
  }

  delay() {
    return this.sub._retryDelay(Math.max(this.attempts, 1));
  }
}

// Calls `onIdle` once `touch` has not been called for `ms` (0 or Infinity:
// never). The timer is re-armed for the time left rather than restarted on
// every touch, and a timer that fires late (a background tab, a laptop
// waking up) measures the real time.
class IdleWatch {
  constructor(ms, onIdle) {
    this.ms = ms;
    this.onIdle = onIdle;
    this.last = 0;
    this.timer = null;
  }

  start() {
    this.last = Date.now();
    this.arm(this.ms);
  }

  touch() {
    this.last = Date.now();
  }

  arm(delay) {
    clearTimeout(this.timer);
    if (this.ms > 0 && Number.isFinite(this.ms)) this.timer = setTimeout(() => this.check(), delay);
  }

  check() {
    const left = this.last + this.ms - Date.now();
    if (left > 0) this.arm(left);
    else this.onIdle();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}

// Tokens from getToken that fail in a row (refused at once, or over within
// QUICK_END ms) before the subscription gives up.
const TOKEN_FAILURES = 3;
const QUICK_END = 500;
// A poll's JWT this close to its `exp` (ms) is renewed before the poll.
const EXPIRING = 250;

// The token a subscription's requests carry, renewed with getToken when the
// server says it expired or refuses it. One renewal at a time: the workers
// whose requests carried the same token all wait for it.
class TokenKeeper {
  constructor(sub, token, getToken) {
    if (token !== undefined && (typeof token !== 'string' || token === '')) {
      throw new TypeError('token must be a non-empty string');
    }
    if (getToken !== undefined && typeof getToken !== 'function') {
      throw new TypeError('getToken must be a function returning a token (or a promise of one)');
    }
    this.sub = sub;
    this.getToken = getToken ?? null;
    this.renewal = null;
    this.failures = 0;
    this.set(token ?? null, false);
  }

  // Makes `token` the current one. `fromGetToken`: a fresh one, whose
  // failure counts (see failedAtOnce).
  set(token, fromGetToken) {
    this.current = token;
    this.expiry = token === null ? null : jwtExpiry(token);
    this.fromGetToken = fromGetToken;
    this.given = Date.now();
    this.wasAccepted = false;
  }

  renewable() {
    return this.getToken !== null;
  }

  // A request carrying `token` was answered.
  accepted(token) {
    if (token === this.current) this.wasAccepted = true;
  }

  // Whether `token` is the current one and a JWT whose `exp` is at most
  // `ms` from now (by this browser's clock).
  expiresWithin(token, ms) {
    return token === this.current && this.expiry !== null && this.expiry <= Date.now() + ms;
  }

  // `used` is to be replaced. `why`: 'start' (with null: the first token),
  // 'expired' (the server ended a subscription at its expiry),
  // 'unauthorized' (the server refused it), or 'expiring' (its `exp` has
  // passed, or nearly, by this browser's clock). Resolves true once a token other than
  // `used` is current, false when there is none to get (no getToken, too
  // many failures, the subscription closed).
  renew(used, why) {
    if (used !== this.current) return Promise.resolve(true);
    this.renewal ??= this.replace(why).finally(() => {
      this.renewal = null;
    });
    return this.renewal;
  }

  async replace(why) {
    if (!this.getToken || this.sub.closed) return false;
    if (!(await this.backOff(why))) return false;
    const token = await this.fetchToken();
    if (token === null) return false;
    this.set(token, true);
    if (why !== 'start') {
      const reason = why === 'unauthorized' ? 'unauthorized' : 'expired';
      this.sub.dispatchEvent(Object.assign(new Event('comet-token'), { reason }));
    }
    return true;
  }

  // What the server said of the current token, counted: a token that
  // served resets the count; one that failed at once waits the retry delay
  // before the next (with an `error`), and TOKEN_FAILURES in a row give up
  // (false). The browser's own clock ('expiring') and the start say nothing.
  async backOff(why) {
    if (why !== 'expired' && why !== 'unauthorized') return true;
    if (!this.failedAtOnce(why)) {
      this.failures = 0;
      return true;
    }
    this.failures += 1;
    if (this.failures >= TOKEN_FAILURES) return false;
    this.sub._setConnecting(`unauthorized: the token from getToken was ${why === 'expired' ? 'over at once' : 'refused'}`);
    await sleep(this.sub._retryDelay(this.failures));
    return !this.sub.closed;
  }

  // Whether the current token, from getToken, failed at once: refused
  // before any answer accepted it, or over within QUICK_END ms of being
  // given (a getToken handing out a token that has expired, again).
  failedAtOnce(why) {
    if (!this.fromGetToken) return false;
    return (why === 'unauthorized' && !this.wasAccepted) || Date.now() - this.given < QUICK_END;
  }

  // Calls getToken until it gives a token (a failure is retried after the
  // retry delay, with an `error`: its endpoint may be unreachable for a
  // while); null once the subscription is closed.
  async fetchToken() {
    const sub = this.sub;
    for (let attempt = 1; !sub.closed; attempt += 1) {
      try {
        const token = await this.getToken();
        if (typeof token !== 'string' || token === '') throw new TypeError('it gave no token (a non-empty string)');
        return sub.closed ? null : token;
      } catch (error) {
        if (sub.closed) return null;
        sub._setConnecting(`getToken failed: ${error?.message ?? error}`);
        await sleep(sub._retryDelay(attempt));
      }
    }
    return null;
  }
}

// A JWT's `exp` in ms, read without checking the signature (the server
// checks it); null for a token that is not a JWT (an API key).
function jwtExpiry(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    const { exp } = JSON.parse(new TextDecoder().decode(bytes));
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

// The headers that carry `token` (none for null).
function bearer(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// How an expiry ends a subscription that cannot renew its token: as the
// server answers the expired token.
function expiredError() {
  return new HttpError('unauthorized: the token expired, and there is no getToken to renew it', 401, 'unauthorized');
}

// --- What SSE and WebSocket share -----------------------------------------
// One long-lived connection the browser makes, carrying the current token
// in its URL (neither EventSource nor WebSocket can send headers): opened
// within openTimeout, kept while something arrives within idleTimeout,
// renewed with a fresh token at its JWT's expiry, and, when the browser
// gives up on it without saying why, asked about with one poll carrying
// the same token and resume point. Subclasses make the connection
// (`connect`), drop it (`closeConnection`) and say what a poll answered
// while the connection failed means (`answeredAnyway`).
class ConnectionWorker {
  constructor(sub) {
    this.sub = sub;
    this.token = null;
    this.failures = new Failures(sub);
    this.everOpened = false;
    this.stopped = false;
    this.attempt = null;
    this.retryTimer = null;
    this.idle = new IdleWatch(sub.options.idleTimeout, () => this.silent());
  }

  // The connection's query besides the resume point: the token, if any.
  tokenQuery(token) {
    return token === null ? {} : { token };
  }

  awaitOpen() {
    clearTimeout(this.attempt);
    this.attempt = setTimeout(() => this.noAnswer(), this.sub.options.openTimeout);
  }

  // The connection opened: its token was accepted.
  accepted() {
    clearTimeout(this.attempt);
    this.everOpened = true;
    this.sub._token.accepted(this.token);
    this.idle.start();
    this.sub._opened(this);
  }

  // The server ended the connection at the token's expiry: it must not be
  // made again with it; a fresh one goes on from the cursor.
  async renewAfterExpiry() {
    const token = this.token;
    this.idle.stop();
    this.closeConnection();
    if (!(await this.sub._token.renew(token, 'expired'))) return this.sub._fatal(this, expiredError());
    if (!this.stopped) this.connect();
  }

  // A connection failed or was dropped: it is retried (by a new
  // connection when `reconnect`, otherwise by the browser: EventSource)
  // unless that keeps happening.
  failed(reason, reconnect, error) {
    const sub = this.sub;
    sub._lost(this, reason);
    if (this.stopped) return;
    this.failures.add(error);
    if (this.failures.tooMany()) {
      sub._unusable(this, `${this.failures.counted} failed connections`);
    } else if (reconnect) {
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.connect(), this.failures.delay());
    } else {
      sub.stats.requests += 1; // the browser's reconnection
      this.awaitOpen();
    }
  }

  // The first connection not answered in time points at a proxy that holds
  // streams (or upgrades) back; a later one, at an outage.
  noAnswer() {
    this.closeConnection();
    if (this.everOpened) {
      this.failed('no answer in time', true);
      return;
    }
    this.sub._lost(this, 'no answer in time');
    this.sub._unusable(this, 'no answer in time');
  }

  silent() {
    this.closeConnection();
    this.failed(`nothing received for ${this.sub.options.idleTimeout} ms`, true);
  }

  // The browser gave up on the connection (an error status, a wrong content
  // type, a refused cross-origin answer, a failed handshake): it does not
  // say why, so a poll carrying the same token asks the server. A 401 is
  // met with a fresh token. When the token was renewed meanwhile (by
  // another worker), the new one is tried first.
  async refused() {
    const sub = this.sub;
    const token = this.token;
    this.closeConnection();
    if (token !== sub._token.current) return this.connect();
    const verdict = await sub._ask(token);
    if (this.stopped) return;
    if (await sub._renewedAfter(verdict, token)) {
      if (!this.stopped) this.connect();
    } else if (verdict && !isRetryable(verdict)) {
      sub._fatal(this, verdict);
    } else if (verdict) {
      this.failed(verdict.message, true, verdict);
    } else {
      this.answeredAnyway();
    }
  }

  // Anything received shows the connection is alive.
  alive() {
    this.idle.touch();
    this.failures.reset();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.idle.stop();
    this.closeConnection();
  }
}

// --- Server-Sent Events, with the browser's own EventSource -------------
class SseWorker extends ConnectionWorker {
  static available() {
    return typeof EventSource !== 'undefined';
  }

  constructor(sub) {
    super(sub);
    this.source = null;
    this.onMessage = (event) => this.message(event);
  }

  start() {
    if (!SseWorker.available()) {
      this.sub._unusable(this, 'EventSource is not available');
      return;
    }
    this.connect();
  }

  // One EventSource, carrying the current token in its URL. After a lost
  // connection the browser reconnects it by itself (with Last-Event-ID);
  // this worker makes a new one only after dropping a connection that went
  // silent or never answered, or whose token expired or was refused.
  connect() {
    const sub = this.sub;
    const token = sub._token.current;
    const url = sub._url('sse', { heartbeat: 'event', ...this.tokenQuery(token) });
    const source = new EventSource(url, { withCredentials: sub.withCredentials });
    this.source = source;
    this.token = token;
    sub.stats.requests += 1;
    for (const type of sub._types) source.addEventListener(type, this.onMessage);
    source.addEventListener('comet-gap', (event) => this.gap(event));
    source.addEventListener('comet-heartbeat', (event) => this.heartbeat(event));
    source.addEventListener('comet-expired', (event) => this.expired(event));
    source.onopen = (event) => this.opened(event);
    source.onerror = (event) => this.failedOrClosed(event);
    this.awaitOpen();
  }

  opened(event) {
    if (this.stopped) return;
    if (event instanceof MessageEvent) return this.message(event); // a message of type 'open'
    this.accepted();
  }

  expired(event) {
    if (this.stopped) return;
    this.sub.stats.bytes += sseFrameLength(event.type, event.data, '');
    this.renewAfterExpiry();
  }

  failedOrClosed(event) {
    if (this.stopped || event.target !== this.source) return;
    if (event instanceof MessageEvent) return this.message(event); // a message of type 'error'
    this.idle.stop();
    if (event.target.readyState === EventSource.CLOSED) {
      this.refused();
      return;
    }
    this.failed('connection lost', false);
  }

  // Polls are answered, but the browser refuses the event stream: SSE does
  // not work here.
  answeredAnyway() {
    this.sub._lost(this, 'the server refused the event stream');
    this.sub._unusable(this, 'the server refused the event stream');
  }

  listen(type) {
    this.source?.addEventListener(type, this.onMessage);
  }

  message(event) {
    if (this.stopped) return;
    this.alive();
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

  gap(event) {
    if (this.stopped) return;
    this.alive();
    this.sub.stats.bytes += sseFrameLength(event.type, event.data, '');
    try {
      this.sub._deliver({ kind: 'gap', ...JSON.parse(event.data) }, true, this);
    } catch {
      // a malformed gap signal carries nothing to deliver
    }
  }

  heartbeat(event) {
    if (this.stopped) return;
    this.alive();
    this.sub.stats.bytes += sseFrameLength(event.type, event.data, '');
  }

  closeConnection() {
    clearTimeout(this.attempt);
    this.source?.close();
    this.source = null;
  }
}

// --- WebSocket, with the browser's own WebSocket ------------------------
// Receive-only: the server sends one JSON object of the HTTP streaming
// transport per text frame (a message, a gap, a heartbeat) and closes a
// WebSocket that sends it data, so this worker never sends any. The
// browser does not reconnect a WebSocket: every new connection is this
// worker's, from the cursor. Close codes: 4401 the token expired (a fresh
// one, then on at once), 4403 the authorization was revoked (the end,
// as a 403), any other after the connection opened (1001 the server is
// shutting down, 1011 it failed, 1006 the connection broke) a lost
// connection, retried after the retry delay. A handshake the server
// refuses (an HTTP error instead of 101) shows only as 1006 before `open`:
// one poll with the same token and resume point learns the real answer.
class WebSocketWorker extends ConnectionWorker {
  static available() {
    return typeof WebSocket !== 'undefined';
  }

  constructor(sub) {
    super(sub);
    this.socket = null;
    this.connected = false;
    this.expiring = false;
  }

  start() {
    if (!WebSocketWorker.available()) {
      this.sub._unusable(this, 'WebSocket is not available');
      return;
    }
    this.connect();
  }

  connect() {
    const sub = this.sub;
    const token = sub._token.current;
    const socket = new WebSocket(webSocketUrl(sub._url('ws', this.tokenQuery(token))));
    this.socket = socket;
    this.token = token;
    this.connected = false;
    this.expiring = false;
    sub.stats.requests += 1;
    socket.onopen = () => this.opened(socket);
    socket.onmessage = (event) => this.frame(socket, event);
    socket.onclose = (event) => this.closed(socket, event);
    this.awaitOpen();
  }

  opened(socket) {
    if (this.stopped || socket !== this.socket) return;
    this.connected = true;
    this.accepted();
  }

  frame(socket, event) {
    if (this.stopped || socket !== this.socket || typeof event.data !== 'string') return;
    this.alive();
    this.sub.stats.bytes += webSocketFrameLength(byteLength(event.data));
    let value;
    try {
      value = JSON.parse(event.data);
    } catch {
      // Not the server's: whatever is in between mangles the stream.
      this.closeConnection();
      this.failed('a WebSocket frame that is not JSON', true);
      return;
    }
    if (value.id !== undefined) this.sub._deliver({ kind: 'message', ...value }, true, this);
    else if (value.gap) this.sub._deliver({ kind: 'gap', ...value.gap }, true, this);
    else if (value.expired === true) this.expiring = true; // the server closes next
  }

  closed(socket, event) {
    if (this.stopped || socket !== this.socket) return;
    this.socket = null;
    clearTimeout(this.attempt);
    this.idle.stop();
    if (event.code === 4401 || this.expiring) return this.renewAfterExpiry();
    if (event.code === 4403) {
      return this.sub._fatal(this, new HttpError('forbidden: the server revoked the authorization', 403, 'forbidden'));
    }
    if (!this.connected) return this.refused();
    this.failed(`connection closed (${event.code}${event.reason ? ` ${event.reason}` : ''})`, true);
  }

  // Polls are answered, but the WebSocket handshake failed. Before any
  // WebSocket opened, they do not work here (a proxy that refuses
  // upgrades): the next transport. After one did, it is a failure like
  // others, retried, and counted.
  answeredAnyway() {
    if (this.everOpened) {
      this.failed('the WebSocket handshake failed', true);
      return;
    }
    this.sub._lost(this, 'the WebSocket handshake failed, though polls are answered');
    this.sub._unusable(this, 'the WebSocket handshake failed, though polls are answered');
  }

  closeConnection() {
    clearTimeout(this.attempt);
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    socket.close();
  }
}

// The ws: or wss: URL of an http: or https: one (relative to this page).
function webSocketUrl(url) {
  const absolute = new URL(url, globalThis.location?.href);
  absolute.protocol = absolute.protocol === 'https:' ? 'wss:' : 'ws:';
  return absolute.href;
}

// What a server's text frame of `payload` bytes takes on the wire (the
// browser does not expose a WebSocket's bytes).
function webSocketFrameLength(payload) {
  return payload + (payload < 126 ? 2 : payload < 65536 ? 4 : 10);
}

// --- HTTP streaming (NDJSON): fetch streams, or XHR at readyState 3 -----
class StreamWorker {
  static available() {
    return canFetchStream() || typeof XMLHttpRequest !== 'undefined';
  }

  constructor(sub) {
    this.sub = sub;
    this.stopped = false;
    this.failures = new Failures(sub);
    this.everReceived = false;
    this.abort = null;
    this.xhr = null;
    this.token = null;
    this.expired = false;
    this.idle = new IdleWatch(sub.options.idleTimeout, () => this.silent());
  }

  start() {
    if (!StreamWorker.available()) {
      this.sub._unusable(this, 'neither fetch streams nor XMLHttpRequest is available');
      return;
    }
    this.run();
  }

  viaFetchStreams() {
    return this.sub.options.streamVia !== 'xhr' && canFetchStream();
  }

  // One connection after another, from the cursor, each carrying the
  // current token. Each ends as 'received' (it brought something, then
  // ended), 'nothing', 'silent' (dropped after idleTimeout), 'renew' (an
  // XHR that grew too long) or 'expired' (the server ended it at the
  // token's expiry). A 401 or an expiry is met with a fresh token.
  async run() {
    const sub = this.sub;
    while (!this.stopped) {
      let end;
      let failure = null;
      try {
        end = this.viaFetchStreams() ? await this.viaFetch() : await this.viaXhr();
      } catch (error) {
        if (this.stopped) return;
        if (await sub._renewedAfter(error, this.token)) continue;
        if (this.stopped) return;
        if (!isRetryable(error)) return sub._fatal(this, error);
        if (error.unusable) {
          sub._lost(this, error.message);
          return sub._unusable(this, error.message);
        }
        end = 'nothing';
        failure = error;
      }
      if (this.stopped) return;
      if (end === 'renew') continue;
      if (end === 'expired') {
        this.failures.reset();
        if (!(await sub._token.renew(this.token, 'expired'))) return sub._fatal(this, expiredError());
        continue;
      }
      sub._lost(this, end === 'silent' ? `nothing received for ${sub.options.idleTimeout} ms` : (failure?.message ?? 'connection lost'));
      if (this.stopped) return;
      if (end === 'received') this.failures.reset();
      else this.failures.add(failure);
      if (this.failures.tooMany()) {
        return sub._unusable(this, `${this.failures.counted} connections without data`);
      }
      await sleep(this.failures.delay());
    }
  }

  // Feeds a decoded piece of the stream; returns what is left of a line.
  // The expiry line (`{"expired":true}`, the last the server sends) sets
  // `expired`.
  lines(pending, text) {
    const all = pending + text;
    const parts = all.split('\n');
    const rest = parts.pop();
    for (const line of parts) {
      if (!line) continue;
      const value = JSON.parse(line);
      if (value.id !== undefined) this.sub._deliver({ kind: 'message', ...value }, true, this);
      else if (value.gap) this.sub._deliver({ kind: 'gap', ...value.gap }, true, this);
      else if (value.expired === true) this.expired = true;
    }
    return rest;
  }

  // The first connection that brings no bytes in time points at a proxy
  // that buffers streams; a later one, at an outage.
  noBytes() {
    if (this.everReceived) return 'nothing';
    throw Object.assign(new Error('no bytes arrived: is a proxy buffering the stream?'), { unusable: true });
  }

  received(bytes) {
    this.everReceived = true;
    this.idle.touch();
    this.sub.stats.bytes += bytes;
  }

  silent() {
    this.wentSilent = true;
    this.abort?.abort();
    this.xhr?.abort();
  }

  async viaFetch() {
    const sub = this.sub;
    const abort = new AbortController();
    this.abort = abort;
    this.wentSilent = false;
    this.expired = false;
    this.token = sub._token.current;
    const firstBytes = setTimeout(() => abort.abort(), sub.options.openTimeout);
    sub.stats.requests += 1;
    let received = false;
    try {
      const response = await fetch(sub._url('stream'), sub._request(this.token, abort.signal));
      if (!response.ok) throw httpError(response.status, await response.text());
      if (!(response.headers.get('content-type') ?? '').startsWith('application/x-ndjson')) {
        throw Object.assign(new Error('not an NDJSON stream'), { unusable: true });
      }
      sub._token.accepted(this.token);
      sub._opened(this);
      this.idle.start();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) break;
        if (!received) clearTimeout(firstBytes);
        received = true;
        this.received(value.byteLength);
        pending = this.lines(pending, decoder.decode(value, { stream: true }));
        if (this.expired) break;
      }
    } catch (error) {
      if (error instanceof HttpError || error.unusable) throw error;
      if (!received && abort.signal.aborted && !this.stopped) return this.noBytes();
    } finally {
      clearTimeout(firstBytes);
      this.idle.stop();
      abort.abort(); // done with this answer, whatever is left of it
    }
    if (this.expired) return 'expired';
    if (this.wentSilent) return 'silent';
    return received ? 'received' : 'nothing';
  }

  // XHR at readyState 3: the response grows; slice off what was read. A
  // long-lived XHR keeps its whole text, so the connection is renewed (from
  // the cursor) once it holds a few MiB.
  viaXhr() {
    const sub = this.sub;
    this.wentSilent = false;
    this.expired = false;
    this.token = sub._token.current;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      let seen = 0;
      let pending = '';
      let received = false;
      let renew = false;
      // The server ends the answer after the expiry line: that is 'expired'.
      const end = () => {
        this.idle.stop();
        if (this.expired) resolve('expired');
        else if (this.wentSilent) resolve('silent');
        else if (renew) resolve('renew');
        else resolve(received ? 'received' : 'nothing');
      };
      const firstBytes = setTimeout(() => {
        xhr.onreadystatechange = null;
        xhr.onabort = null;
        xhr.abort();
        try {
          resolve(this.noBytes());
        } catch (error) {
          reject(error);
        }
      }, sub.options.openTimeout);
      const consume = () => {
        const text = xhr.responseText;
        if (text.length > seen) {
          if (!received) {
            clearTimeout(firstBytes);
            sub._opened(this);
            this.idle.start();
          }
          received = true;
          const piece = text.slice(seen);
          seen = text.length;
          this.received(byteLength(piece));
          try {
            pending = this.lines(pending, piece);
          } catch (error) {
            xhr.abort();
            reject(error);
            return;
          }
          if (seen > 4 * 1024 * 1024) {
            renew = true;
            xhr.abort();
          }
        }
      };
      xhr.onreadystatechange = () => {
        if (xhr.readyState === 2 && xhr.status !== 200) {
          clearTimeout(firstBytes);
        }
        if (xhr.readyState === 2 && xhr.status === 200) sub._token.accepted(this.token);
        if (xhr.readyState >= 3 && xhr.status === 200) consume();
        if (xhr.readyState === 4) {
          clearTimeout(firstBytes);
          if (xhr.status !== 200 && xhr.status !== 0) reject(httpError(xhr.status, xhr.responseText));
          else end();
        }
      };
      xhr.onabort = () => {
        clearTimeout(firstBytes);
        end();
      };
      xhr.open('GET', sub._url('stream'));
      xhr.withCredentials = sub.withCredentials;
      for (const [name, value] of Object.entries(bearer(this.token))) xhr.setRequestHeader(name, value);
      sub.stats.requests += 1;
      xhr.send();
    });
  }

  stop() {
    this.stopped = true;
    this.idle.stop();
    this.abort?.abort();
    this.xhr?.abort();
  }
}

function canFetchStream() {
  return typeof fetch !== 'undefined' && typeof ReadableStream !== 'undefined' && typeof TextDecoder !== 'undefined';
}

// --- Long polling and short polling -------------------------------------
class PollWorker {
  static available() {
    return typeof fetch !== 'undefined';
  }

  constructor(sub, wait) {
    this.sub = sub;
    this.wait = wait;
    this.stopped = false;
    this.failures = new Failures(sub);
    this.cutShort = 0;
    this.answered = false;
    this.abort = null;
  }

  start() {
    this.run();
  }

  async run() {
    const sub = this.sub;
    // Open once a poll is answered. A long poll is held until there is
    // news, so the first one, and the first after a failure (or while the
    // subscription is not open), is a short poll: the server's answer comes
    // at once. Each poll carries the current token; a 401, or a long poll
    // that the server ended at the token's expiry, is met with a fresh one.
    while (!this.stopped) {
      if (!(await this.freshToken())) return sub._fatal(this, expiredError());
      if (this.stopped) return;
      const started = Date.now();
      const wait = this.answered && sub.readyState === OPEN ? this.wait : 0;
      const token = sub._token.current;
      let answer;
      try {
        answer = await this.poll(wait, token);
      } catch (error) {
        if (this.stopped) return;
        if (await sub._renewedAfter(error, token)) continue;
        if (this.stopped) return;
        if (!isRetryable(error)) return sub._fatal(this, error);
        this.answered = false;
        sub._lost(this, error.message);
        if (this.stopped) return;
        this.failures.add(error);
        if (this.wait > 0 && this.failures.tooMany()) {
          return sub._unusable(this, `${this.failures.counted} failed polls`);
        }
        await sleep(this.failures.delay());
        continue;
      }
      if (this.stopped) return;
      this.failures.reset();
      this.answered = true;
      sub._opened(this);
      sub._deliverAnswer(answer, this);
      const elapsed = Date.now() - started;
      if (this.endedByExpiry(answer, wait, elapsed, token)) {
        if (!(await sub._token.renew(token, 'expired'))) return sub._fatal(this, expiredError());
        continue;
      }
      await sleep(this.pause(answer, wait, elapsed));
    }
  }

  // Before a poll: with getToken, a JWT whose `exp` has passed by this
  // browser's clock, or comes within EXPIRING ms (the poll would be cut
  // short at once), is replaced rather than sent. Resolves false when the
  // subscription closed meanwhile.
  freshToken() {
    const keeper = this.sub._token;
    if (!keeper.renewable() || !keeper.expiresWithin(keeper.current, EXPIRING)) return Promise.resolve(true);
    return keeper.renew(keeper.current, 'expiring');
  }

  // One poll carrying `token`, abandoned when not answered within its wait
  // and openTimeout.
  async poll(wait, token) {
    this.abort = new AbortController();
    const limit = setTimeout(() => this.abort.abort(), wait + this.sub.options.openTimeout);
    try {
      return await this.sub._poll(wait, this.abort.signal, token);
    } finally {
      clearTimeout(limit);
    }
  }

  // Whether the server ended this long poll because `token` expired (it
  // never holds one past the JWT's `exp`): it came back empty before its
  // wait, and the token's `exp` is now, give or take a second of clock
  // difference. The next poll then carries a fresh token, at once.
  endedByExpiry(answer, wait, elapsed, token) {
    return wait > 0 && elapsed < wait && !hasNews(answer) && this.sub._token.expiresWithin(token, 1000);
  }

  // The pause before the next poll. A short poll that brought nothing waits
  // pollInterval (a long poll's worker goes on with a long poll at once). A
  // long poll answered empty well before its wait (a proxy, or the
  // server's cap, cutting it short) waits the retry delay, growing while it
  // keeps happening; one that brought news or lasted goes again at once.
  pause(answer, wait, elapsed) {
    const news = hasNews(answer);
    if (wait === 0) return news || this.wait > 0 ? 0 : this.sub.options.pollInterval;
    if (news || elapsed >= wait / 2) {
      this.cutShort = 0;
      return 0;
    }
    this.cutShort += 1;
    return this.sub._retryDelay(this.cutShort);
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
  }
}

// Whether a poll's answer brought messages or gaps.
function hasNews(answer) {
  return answer.messages.length > 0 || (answer.gaps?.length ?? 0) > 0;
}

class LongPollWorker extends PollWorker {
  constructor(sub) {
    super(sub, sub.options.longPollWait);
  }
}

class ShortPollWorker extends PollWorker {
  constructor(sub) {
    super(sub, 0);
  }
}

const WORKERS = {
  ws: WebSocketWorker,
  sse: SseWorker,
  stream: StreamWorker,
  longpoll: LongPollWorker,
  poll: ShortPollWorker,
};

// --- Publishing --------------------------------------------------------------

/** Publishes `data` to `channel`; resolves with `{channel, id, subscribers}`.
 * A string is sent as it is; a plain JSON value (object, array, number,
 * boolean, null) as its JSON text. Options: `server`, `event` (the type),
 * `idempotencyKey` (sent as `Idempotency-Key`: a retry with the same key
 * and message is stored once, and answered with the original's id and
 * `duplicate: true`), `signal` (an AbortSignal), `timeout` (ms), `token`
 * (sent as `Authorization: Bearer`), `withCredentials` (send cookies to a
 * server of another origin too). Rejects with a TypeError for a channel
 * name the server would refuse, data that is neither or a key that is not
 * 1 to 255 printable ASCII characters, with an HttpError when the server
 * refuses (`status`, `code`; 401 and 403 for a missing or refused token,
 * 409 `idempotency_conflict` for a key used for another message), and with
 * the signal's reason when aborted or timed out.
 *
 * `publish(messages, options)`, with an array of `{channel, data, event?,
 * idempotencyKey?}`, publishes them as one batch: all stored or none, each
 * channel's in the array's order; it resolves with their results, in
 * order. A TypeError names the index of the message it refuses; so does
 * an HttpError (`index`) for a message the server refuses. Options:
 * `server`, `signal`, `timeout`, `token`, `withCredentials`. */
export async function publish(channel, data, options) {
  if (Array.isArray(channel)) return publishBatch(channel, data);
  const { server = '', event, idempotencyKey, signal, timeout, token, withCredentials = false } = options ?? {};
  checkChannel(channel, 'publish');
  const body = publishBody(data, 'publish');
  checkIdempotencyKey(idempotencyKey, 'publish');
  const query = event === undefined || event === null || event === '' ? '' : `?event=${encodeURIComponent(event)}`;
  const headers = bearer(token);
  if (idempotencyKey != null) headers['Idempotency-Key'] = idempotencyKey;
  const response = await fetch(`${publishBase(server)}/pub/${channel}${query}`, {
    method: 'POST',
    body,
    headers,
    credentials: withCredentials ? 'include' : 'same-origin',
    signal: requestSignal(signal, timeout),
  });
  const text = await response.text();
  if (!response.ok) throw httpError(response.status, text);
  return JSON.parse(text);
}

// A batch (`POST /pub`): every message checked first, then one request.
async function publishBatch(messages, options) {
  if (options != null && (typeof options !== 'object' || Array.isArray(options))) {
    throw new TypeError('publish: with an array of messages, the second argument is the options');
  }
  const { server = '', event, idempotencyKey, signal, timeout, token, withCredentials = false } = options ?? {};
  if (event != null || idempotencyKey != null) {
    throw new TypeError('publish: in a batch, `event` and `idempotencyKey` belong to each message, not to the options');
  }
  const items = [];
  for (let index = 0; index < messages.length; index += 1) items.push(batchItem(messages[index], index));
  const response = await fetch(`${publishBase(server)}/pub`, {
    method: 'POST',
    body: JSON.stringify({ messages: items }),
    headers: { 'Content-Type': 'application/json', ...bearer(token) },
    credentials: withCredentials ? 'include' : 'same-origin',
    signal: requestSignal(signal, timeout),
  });
  const text = await response.text();
  if (!response.ok) throw httpError(response.status, text);
  return JSON.parse(text).results;
}

// A batch's message as the server reads it: `data` as it is (a string is
// the data; any other JSON value is stored as its compact JSON text).
function batchItem(message, index) {
  const what = `publish: message ${index} of the batch`;
  if (message === null || typeof message !== 'object' || Array.isArray(message)) {
    throw new TypeError(`${what} is not an object {channel, data, event?, idempotencyKey?}`);
  }
  const { channel, data, event, idempotencyKey } = message;
  checkChannel(channel, what);
  checkData(data, what);
  checkIdempotencyKey(idempotencyKey, what);
  const item = { channel, data };
  if (event !== undefined && event !== null && event !== '') {
    if (typeof event !== 'string') throw new TypeError(`${what}: the event type ${JSON.stringify(event)} is not a string`);
    item.event = event;
  }
  if (idempotencyKey != null) item.idempotency_key = idempotencyKey;
  return item;
}

function publishBase(server) {
  return (server || globalThis.location?.origin || '').replace(/\/$/, '');
}

// Throws a TypeError, its message starting with `what`, for a channel name
// the server would refuse, or one a URL cannot name.
function checkChannel(channel, what) {
  if (typeof channel !== 'string' || !CHANNEL.test(channel)) {
    throw new TypeError(`${what}: ${JSON.stringify(channel)} is not a channel name (1 to 200 of A-Z a-z 0-9 _ - . : @ ~)`);
  }
  if (channel === '.' || channel === '..') {
    // URLs drop such path segments: a request naming it (a publish, a
    // subscription) would go to another path.
    throw new TypeError(`${what}: the channel ${channel} cannot be named in a URL`);
  }
}

// Throws a TypeError for an idempotency key the server would refuse
// (undefined and null: no key).
function checkIdempotencyKey(key, what) {
  if (key != null && (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key))) {
    throw new TypeError(
      `${what}: ${JSON.stringify(key)} is not an idempotency key (1 to 255 printable ASCII characters, no spaces)`,
    );
  }
}

// The body of a single publish: a string as it is, a plain JSON value as
// its JSON text.
function publishBody(data, what) {
  checkData(data, what);
  return typeof data === 'string' ? data : JSON.stringify(data);
}

// Throws a TypeError for data that is neither a string nor a plain JSON value.
function checkData(data, what) {
  if (typeof data !== 'string' && !isJsonValue(data, new Set())) {
    throw new TypeError(
      `${what}: data must be a string or a plain JSON value (object, array, finite number, boolean, null); encode other data as text first`,
    );
  }
}

// Whether JSON.stringify gives exactly this value back when parsed: no
// Blob, ArrayBuffer, Date, Map, class instance, function, NaN, undefined
// (except as a property, which is left out) or cycle, at any depth.
function isJsonValue(value, ancestors) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (typeof value !== 'object' || ancestors.has(value)) return false;
  const isArray = Array.isArray(value);
  const prototype = Object.getPrototypeOf(value);
  // A plain object's prototype is Object.prototype (of any realm), or null.
  if (!isArray && prototype !== null && Object.getPrototypeOf(prototype) !== null) return false;
  ancestors.add(value);
  const ok = isArray
    ? value.every((item) => isJsonValue(item, ancestors))
    : Object.values(value).every((item) => item === undefined || isJsonValue(item, ancestors));
  ancestors.delete(value);
  return ok;
}

// The signal a request is aborted by: the caller's, a timeout, both, or none.
function requestSignal(signal, timeout) {
  const signals = signal ? [signal] : [];
  if (timeout !== undefined) signals.push(timeoutSignal(timeout));
  if (signals.length <= 1) return signals[0];
  if (AbortSignal.any) return AbortSignal.any(signals);
  const controller = new AbortController();
  for (const each of signals) {
    if (each.aborted) controller.abort(each.reason);
    else each.addEventListener('abort', () => controller.abort(each.reason), { once: true });
  }
  return controller.signal;
}

function timeoutSignal(ms) {
  if (AbortSignal.timeout) return AbortSignal.timeout(ms);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new DOMException('publish timed out', 'TimeoutError')), ms);
  return controller.signal;
}
