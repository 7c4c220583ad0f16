// Types of comet.js, the browser client for Comet (served at /comet.d.ts).

/** The transports, best first. */
export type Transport = 'sse' | 'stream' | 'longpoll' | 'poll';

export interface SubscribeOptions {
  /** The Comet server, e.g. "https://push.example.com" (default: this page's origin). */
  server?: string;
  /** A transport, or 'auto' (default): the best available, falling back when it fails. */
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
  /** Seconds a long poll may be held. Default 25. */
  longPollWait?: number;
  /** Pause between empty short polls, in ms. Default 2000. */
  pollInterval?: number;
  /** Time for a stream's first bytes, in ms, before the transport is judged unusable. Default 10000. */
  openTimeout?: number;
  /** Consecutive failures before 'auto' moves to the next transport. Default 3. */
  failuresBeforeFallback?: number;
}

/** A message, dispatched with its event type (`message` by default). */
export interface CometMessageEvent extends MessageEvent<string> {
  /** The message's channel. */
  readonly channel: string;
  /** The message's id: resuming after it yields what followed. */
  readonly lastEventId: string;
}

/** Messages of a channel were missed. */
export interface GapEvent extends Event {
  readonly channel: string;
  /** 'trimmed': no longer in the server's history; 'reset': the server's history was reset. */
  readonly reason: 'trimmed' | 'reset';
}

export interface TransportEvent extends Event {
  readonly transport: Transport;
}

export interface SubscriptionErrorEvent extends Event {
  readonly message: string;
  readonly status?: number;
}

export interface SubscriptionEventMap {
  message: CometMessageEvent;
  gap: GapEvent;
  open: Event;
  transport: TransportEvent;
  error: SubscriptionErrorEvent;
}

export declare class Subscription extends EventTarget {
  /** The channels, comma-separated. */
  readonly channels: string;
  /** The transport in use. */
  readonly transport: Transport | null;
  /** The id (or cursor) the subscription would resume after. */
  readonly cursor: string | null;
  /** Requests made, body bytes received (estimated for SSE), messages delivered. */
  readonly stats: { requests: number; bytes: number; messages: number };
  readonly closed: boolean;
  addEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (event: SubscriptionEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Custom event types: the messages published with `?event=TYPE`. */
  addEventListener(
    type: string,
    listener: (event: CometMessageEvent) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Stops everything. */
  close(): void;
}

/** Starts a subscription to `channels` ("news,sport" or ["news", "sport"]). */
export declare function subscribe(channels: string | string[], options?: SubscribeOptions): Subscription;

/** Publishes `data` (a string, or a value sent as JSON) to `channel`. */
export declare function publish(
  channel: string,
  data: unknown,
  options?: { server?: string; event?: string },
): Promise<{ channel: string; id: string; subscribers: number }>;
