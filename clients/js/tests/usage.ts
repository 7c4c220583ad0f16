// Type-checked by the test suite (tsc --noEmit): the declarations in
// comet.d.ts describe the client as documented.
import {
  HttpError,
  publish,
  subscribe,
  Subscription,
  type CometMessageEvent,
  type PublishMessage,
  type PublishResult,
} from '../comet.js';

const sub: Subscription = subscribe('news,sport', {
  server: 'https://push.example.com',
  transport: 'auto',
  backlog: 10,
  share: true,
  longPollWait: 25000,
  idleTimeout: 45000,
  climbBackAfter: 60000,
});
sub.addEventListener('message', (event) => {
  const data: string = event.data;
  const id: string = event.lastEventId;
  const channel: string = event.channel;
  console.log(data, id, channel);
});
sub.addEventListener('my-type', (event: CometMessageEvent) => console.log(event.channel));
// Messages published with the types `gap` and `transport` are messages like any other.
sub.addEventListener('gap', (event: CometMessageEvent) => console.log(event.data));
sub.addEventListener('comet-gap', (event) => {
  const reason: 'trimmed' | 'reset' = event.reason;
  console.log(event.channel, reason);
});
sub.addEventListener('comet-transport', (event) => console.log(event.transport));
sub.addEventListener('error', (event) => console.log(event.message, event.status, event.code));
const transport: 'ws' | 'sse' | 'stream' | 'longpoll' | 'poll' | null = sub.transport;
const { requests, bytes, messages, skipped } = sub.stats;
console.log(transport, requests, bytes, messages, skipped, sub.cursor);
sub.close();

// Code written for EventSource.
const connect = subscribe('news');
connect.onopen = () => console.log('open', connect.url, connect.withCredentials);
connect.onmessage = (event) => console.log(event.data, event.lastEventId);
connect.onerror = () => {
  if (connect.readyState === connect.CLOSED) console.log('gave up');
  else if (connect.readyState === Subscription.CONNECTING) console.log('reconnecting');
};
connect.onmessage = null;
const state: number = connect.readyState;
console.log(state, EventSource.OPEN === Subscription.OPEN);
connect.close();

subscribe(['a', 'b'], { transport: 'stream', streamVia: 'xhr', since: 'k3x9q2mf-7/a' });
subscribe('news', { transport: 'ws', since: 'k3x9q2mf-7/news', token: 'an-api-key-of-16-bytes' });

// Tokens: a fixed one, or renewed from the page's back end; cookies across origins.
const withKey = subscribe('news', { token: 'an-api-key-of-16-bytes', withCredentials: true });
const cookies: boolean = withKey.withCredentials;
console.log(cookies);
const renewed = subscribe('user.42.inbox', {
  getToken: async () => (await fetch('/comet-token')).text(),
});
renewed.addEventListener('comet-token', (event) => {
  const reason: 'expired' | 'unauthorized' = event.reason;
  console.log(reason);
});
subscribe('news', { token: 'first', getToken: () => 'next' });
void publish('news', 'with a key', { token: 'an-api-key-of-16-bytes', withCredentials: false });
const answer: Promise<{ channel: string; id: string; subscribers: number }> = publish('news', { hello: 1 }, { event: 'update' });
void answer;
publish('news', 'text', { timeout: 5000, signal: new AbortController().signal }).catch((error: unknown) => {
  if (error instanceof HttpError) console.log(error.status, error.code, error.retryable);
});

// Idempotency keys and batches.
void publish('orders', { id: 42 }, { idempotencyKey: 'order-42' }).then((result) => {
  const repeated: boolean = result.duplicate === true;
  console.log(result.id, result.subscribers, repeated);
});
const batch: Promise<PublishResult[]> = publish(
  [
    { channel: 'news', data: 'text' },
    { channel: 'prices', event: 'update', data: { price: 3 }, idempotencyKey: 'price-3' },
  ],
  { token: 'an-api-key-of-16-bytes', timeout: 5000 },
);
batch.catch((error: unknown) => {
  if (error instanceof HttpError && error.index !== undefined) console.log('message', error.index, error.code);
});
const outbox: PublishMessage[] = [{ channel: 'news', data: null }];
void publish(outbox);
// @ts-expect-error: in a batch, the event type belongs to each message.
void publish(outbox, { event: 'update' });
