// Type-checked by the test suite (tsc --noEmit): the declarations in
// comet.d.ts describe the client as documented.
import { publish, subscribe, type CometMessageEvent, type Subscription } from '../comet.js';

const sub: Subscription = subscribe('news,sport', {
  server: 'https://push.example.com',
  transport: 'auto',
  backlog: 10,
  share: true,
});
sub.addEventListener('message', (event) => {
  const data: string = event.data;
  const id: string = event.lastEventId;
  const channel: string = event.channel;
  console.log(data, id, channel);
});
sub.addEventListener('my-type', (event: CometMessageEvent) => console.log(event.channel));
sub.addEventListener('gap', (event) => {
  const reason: 'trimmed' | 'reset' = event.reason;
  console.log(event.channel, reason);
});
sub.addEventListener('transport', (event) => console.log(event.transport));
sub.addEventListener('error', (event) => console.log(event.message, event.status));
const transport: 'sse' | 'stream' | 'longpoll' | 'poll' | null = sub.transport;
const { requests, bytes, messages } = sub.stats;
console.log(transport, requests, bytes, messages, sub.cursor);
sub.close();

subscribe(['a', 'b'], { transport: 'stream', streamVia: 'xhr', since: 'k3x9q2mf-7/a' });
const answer: Promise<{ channel: string; id: string; subscribers: number }> = publish('news', { hello: 1 }, { event: 'update' });
void answer;
