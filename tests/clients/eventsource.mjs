// Drives the npm `eventsource` package (a WHATWG EventSource for Node)
// against a Comet SSE URL. Prints one JSON line per happening on stdout:
//   {"open":true}                                   each (re)connection
//   {"type","data","lastEventId"}                   each event received
//   {"error":"..."}                                 each connection error
// and exits after COUNT message events.
// Usage: node eventsource.mjs URL COUNT
import { EventSource } from 'eventsource';

const [url, countText] = process.argv.slice(2);
const count = Number(countText);
const source = new EventSource(url);
let received = 0;
const print = (value) => process.stdout.write(JSON.stringify(value) + '\n');

source.addEventListener('open', () => print({ open: true }));
source.addEventListener('error', (event) => print({ error: String(event.message ?? event.type) }));
const onEvent = (event) => {
  print({ type: event.type, data: event.data, lastEventId: event.lastEventId });
  if (event.type !== 'comet-gap' && ++received >= count) {
    source.close();
    process.exit(0);
  }
};
source.addEventListener('message', onEvent);
source.addEventListener('update', onEvent);
source.addEventListener('comet-gap', onEvent);
