// Types of comet.js, the browser client for Comet (served at /comet.d.ts).
// Every duration is in milliseconds.

/** The transports, best first: 'ws' (WebSocket, receive-only), 'sse' (EventSource), 'stream'
 * (HTTP streaming), 'longpoll', 'poll'. */
export type Transport = 'ws' | 'sse' | 'stream' | 'longpoll' | 'poll';

export interface SubscribeOptions {
  /** The Comet server, e.g. "https://push.example.com" (default: this page's origin). */
  server?: string;
  /** A transport, or 'auto' (default): the best available (WebSocket first: it does not use up one
   * of the browser's six HTTP/1.1 connections per origin), falling back when it fails (a proxy
   * that refuses WebSocket upgrades or buffers streams) and trying the best again later. */
  transport?: Transport | 'auto';
  /** Resume after this id or cursor. */
  since?: string;
  /** Without `since`: first deliver the newest N messages of each channel. */
  backlog?: number;
  /** Share one connection between the tabs of this origin that subscribe alike. */
  share?: boolean;
  /** How 'stream' reads: fetch streams or XHR at readyState 3 (default: fetch when available). */
  streamVia?: 'auto' | 'fetch' | 'xhr';
  /** First reconnection delay in ms (doubled per failure, with jitter). Default 1000. */
  retry?: number;
  /** Longest reconnection delay in ms. Default 30000. */
  maxRetry?: number;
  /** How long a long poll may be held, in ms (sent as whole seconds, rounded up). Keep it at or
   * below the server's --max-wait and any proxy's timeout. Default 25000. */
  longPollWait?: number;
  /** Pause between empty short polls, in ms. Default 2000. */
  pollInterval?: number;
  /** Time for a connection to answer (a stream's first bytes, a WebSocket's handshake), in ms: the first connection of a
   * transport not answered in time makes it unusable; later ones count as failures. Default 10000. */
  openTimeout?: number;
  /** An open stream or WebSocket that receives nothing at all (message, heartbeat, gap) for this long, in ms,
   * is dropped and reconnected from the cursor. Keep it above the server's heartbeat interval
   * (15 s by default). 0 or Infinity: never. Default 45000. */
  idleTimeout?: number;
  /** After 'auto' moved down, try the best transport again this often, in ms (and whenever the
   * browser comes back online). 0 or Infinity: only when coming back online. Default 60000. */
  climbBackAfter?: number;
  /** Consecutive failures (not counting those while the browser is offline) before 'auto' moves
   * to the next transport. Default 3. */
  failuresBeforeFallback?: number;
  /** A token (an API key or a JWT) every request carries: `Authorization: Bearer` on fetch and
   * XHR, the `token` query parameter on EventSource and WebSocket. With `getToken`, the first token. */
  token?: string;
  /** Gives a token valid now. Called at the start (unless `token` is given), when the server ends
   * the subscription at its JWT's expiry (a WebSocket: close code 4401; long polls: also before a poll whose JWT is about to
   * expire), and when it answers 401; the subscription then goes on from its cursor over the same
   * transport, dispatching `comet-token` and nothing else. A token from it that is refused at once, or is over
   * within half a second, delays the next call by the retry delay (with an `error`); the third in
   * a row ends the subscription (`error`, CLOSED, status 401). A call that throws is retried after
   * the retry delay (with an `error`). Without it, an expiry or a 401 ends the subscription. */
  getToken?: () => string | Promise<string>;
  /** Send cookies (e.g. `comet_token`) to a server of another origin too, as EventSource's option;
   * the server must list this page's origin with --cors-origin (not `*`). Default false. No effect
   * on 'ws': a WebSocket handshake carries the server's cookies whatever this says. */
  withCredentials?: boolean;
}

/** A message, dispatched with its event type (`message` by default). */
export interface CometMessageEvent extends MessageEvent<string> {
  /** The message's channel. */
  readonly channel: string;
  /** The message's id: resuming after it yields what followed. */
  readonly lastEventId: string;
}

/** `comet-gap`: messages of a channel were missed. */
export interface GapEvent extends Event {
  readonly type: 'comet-gap';
  readonly channel: string;
  /** 'trimmed': no longer in the server's history; 'reset': the server's history was reset. */
  readonly reason: 'trimmed' | 'reset';
}

/** `comet-transport`: the subscription now uses this transport. */
export interface TransportEvent extends Event {
  readonly type: 'comet-transport';
  readonly transport: Transport;
}

/** `comet-token`: getToken gave a fresh token, which the subscription now uses; it goes on from
 * its cursor (nothing lost or repeated). */
export interface TokenEvent extends Event {
  readonly type: 'comet-token';
  /** 'expired': the token's JWT expired; 'unauthorized': the server refused it (401). */
  readonly reason: 'expired' | 'unauthorized';
}

/** `error`: a connection was lost or could not be made and is being retried (readyState
 * CONNECTING), or the subscription ended for good (readyState CLOSED, with `status`). */
export interface SubscriptionErrorEvent extends Event {
  readonly type: 'error';
  readonly message?: string;
  /** The HTTP status that ended the subscription (401 too when a token expired and could not be
   * renewed; 403 too when the server closed a WebSocket with 4403, the authorization revoked). */
  readonly status?: number;
  /** The server's error code that ended the subscription, e.g. "invalid_cursor", "unauthorized",
   * "forbidden". */
  readonly code?: string;
}

export interface SubscriptionEventMap {
  message: CometMessageEvent;
  open: Event;
  error: SubscriptionErrorEvent;
  'comet-gap': GapEvent;
  'comet-transport': TransportEvent;
  'comet-token': TokenEvent;
}

/** What a subscription cost and delivered. */
export interface SubscriptionStats {
  /** Requests made (a WebSocket handshake is one). */
  requests: number;
  /** Body bytes received (estimated for SSE and WebSocket: events and frames as sent). */
  bytes: number;
  /** Messages dispatched. */
  messages: number;
  /** Messages of types the server reserves (`open`, `error`, `comet-…`), from history published
   * before it did: never dispatched. */
  skipped: number;
}

/** A subscription; it can stand in for an EventSource. */
export declare class Subscription extends EventTarget {
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSED: 2;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSED: 2;
  /** CONNECTING until a transport is open and while reconnecting; OPEN while connected; CLOSED
   * after close() or a refusal (a 4xx answer). */
  readonly readyState: 0 | 1 | 2;
  /** The SSE endpoint of the channels (`${server}/sse/${channels}`, without the resume query),
   * whatever transport is in use. */
  readonly url: string;
  /** The `withCredentials` option (default false). */
  readonly withCredentials: boolean;
  /** Called on `open`, as EventSource's. */
  onopen: ((this: Subscription, event: Event) => any) | null;
  /** Called for messages of type `message` only, as EventSource's. */
  onmessage: ((this: Subscription, event: CometMessageEvent) => any) | null;
  /** Called on `error`, as EventSource's. */
  onerror: ((this: Subscription, event: SubscriptionErrorEvent) => any) | null;
  /** The channels, comma-separated. */
  readonly channels: string;
  /** The transport in use. */
  readonly transport: Transport | null;
  /** The id (or cursor) the subscription would resume after. */
  readonly cursor: string | null;
  readonly stats: SubscriptionStats;
  readonly closed: boolean;
  addEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (this: Subscription, event: SubscriptionEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Custom event types: the messages published with `?event=TYPE`. */
  addEventListener(
    type: string,
    listener: (this: Subscription, event: CometMessageEvent) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (this: Subscription, event: SubscriptionEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: (this: Subscription, event: CometMessageEvent) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stops everything; readyState becomes CLOSED (no event). */
  close(): void;
}

/** Starts a subscription to `channels` ("news,sport" or ["news", "sport"]). */
export declare function subscribe(channels: string | string[], options?: SubscribeOptions): Subscription;

/** An HTTP answer that is not a success. */
export declare class HttpError extends Error {
  readonly name: 'HttpError';
  /** The HTTP status. */
  readonly status: number;
  /** The server's error code, e.g. "reserved_event", when it sent one. */
  readonly code?: string;
  /** A batch publish: the index of the message the server refused (the first bad one), when it
   * named one. */
  readonly index?: number;
  /** Whether the same request may succeed later (any status but a 4xx, and 408 and 429). */
  readonly retryable: boolean;
}

export interface PublishOptions {
  /** The Comet server (default: this page's origin). */
  server?: string;
  /** The event type (default `message`). */
  event?: string;
  /** Sent as `Idempotency-Key` (1 to 255 printable ASCII characters, no spaces): a retry with the
   * same key and message (within the server's idempotency window) stores nothing new and resolves
   * with the original's id and `duplicate: true`; the same key with another message is an
   * HttpError 409 `idempotency_conflict`. */
  idempotencyKey?: string;
  /** Aborts the request. */
  signal?: AbortSignal;
  /** Aborts the request after this many ms (a TimeoutError). */
  timeout?: number;
  /** A token (an API key or a JWT granting `publish`), sent as `Authorization: Bearer`. */
  token?: string;
  /** Send cookies (e.g. `comet_token`) to a server of another origin too. Default false. */
  withCredentials?: boolean;
}

/** The options of a batch publish: `event` and `idempotencyKey` belong to each message. */
export type PublishBatchOptions = Omit<PublishOptions, 'event' | 'idempotencyKey'>;

/** A message of a batch publish. */
export interface PublishMessage {
  channel: string;
  /** A string is the data as it is; a plain JSON value is stored as its compact JSON text. */
  data: unknown;
  /** The event type (default `message`). */
  event?: string;
  /** As PublishOptions' `idempotencyKey`, for this message. */
  idempotencyKey?: string;
}

/** What the server answers for a published message. */
export interface PublishResult {
  channel: string;
  /** The message's id (its cursor and channel). */
  id: string;
  /** Subscribers connected for the channel when it was published. */
  subscribers: number;
  /** Present when an idempotency key matched an earlier publish: nothing new was stored, and
   * `id` and `subscribers` are the original's. */
  duplicate?: true;
}

/**
 * Publishes `data` to `channel`: a string as it is; a plain JSON value (object, array, finite
 * number, boolean, null, at any depth) as its JSON text. Rejects with a TypeError for a channel
 * name the server would refuse (1 to 200 of `A-Z a-z 0-9 _ - . : @ ~`) or other data (Blob,
 * ArrayBuffer, Date, Map, class instances, …: checked when called, since TypeScript cannot tell
 * plain objects from others) or an `idempotencyKey` it would refuse, with an HttpError when the
 * server refuses (401 without a valid token, 403 when it does not grant the channel, 409
 * `idempotency_conflict` for a key already used for another message), and with the signal's
 * reason when aborted or timed out.
 */
export declare function publish(channel: string, data: unknown, options?: PublishOptions): Promise<PublishResult>;
/**
 * Publishes `messages` as one batch (`POST /pub`): all stored or none, each channel's in the
 * array's order; resolves with their results, in the same order. Rejects with a TypeError naming
 * the index of a message with a bad channel name, data, event type or idempotency key (nothing is
 * sent), with an HttpError when the server refuses (`index`: the message it refused, e.g. 400 for
 * a reserved event type or 409 `idempotency_conflict`; 413 beyond the server's limits), and with
 * the signal's reason when aborted or timed out.
 */
export declare function publish(messages: readonly PublishMessage[], options?: PublishBatchOptions): Promise<PublishResult[]>;
