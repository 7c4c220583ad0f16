// What the browser tests share: the real comet binary, headless Chromium
// (Debian's, driven by playwright-core), a bare static server for pages of
// another origin, and small waits that fail loudly instead of hanging.
//
// Development switches (off in CI, which runs against the binary built from
// the same tree, whose /comet.js and page are compiled into it):
//   COMET_JS_FILE=clients/js/comet.js   every page the harness opens gets its
//     /comet.js answered from this file on disk instead of the binary's copy,
//     so the client can be iterated on without rebuilding the server;
//   COMET_PAGE_DIR=clients/js/page      the same for the built-in page
//     (/, /app.js, /style.css, /favicon.ico); Chromium then runs with its
//     Local Network Access checks off (see `launch`).
// The answer keeps the server's status and headers (CORS included); only
// the body is replaced (Playwright's page.route, route.fetch, route.fulfill).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '../../..');
const binary = process.env.COMET_BIN ?? join(root, 'target/debug/comet');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

// Paths answered from disk when a development switch is set (see above).
const devFiles = new Map();
if (process.env.COMET_JS_FILE) devFiles.set('/comet.js', resolve(process.env.COMET_JS_FILE));
if (process.env.COMET_PAGE_DIR) {
  const dir = resolve(process.env.COMET_PAGE_DIR);
  for (const [path, file] of [
    ['/', 'index.html'],
    ['/app.js', 'app.js'],
    ['/style.css', 'style.css'],
    ['/favicon.ico', 'favicon.svg'],
  ]) {
    devFiles.set(path, join(dir, file));
  }
}

/** A running `comet serve`. */
export class Comet {
  static async start(args = [], listen = '127.0.0.1:0') {
    const comet = new Comet(args);
    await comet.#spawn(listen);
    return comet;
  }

  constructor(args) {
    this.args = args;
  }

  async #spawn(listen) {
    this.process = spawn(binary, ['serve', '--listen', listen, ...this.args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, COMET_LOG: 'error' },
    });
    const lines = createInterface({ input: this.process.stdout });
    const [line] = await withTimeout(once(lines, 'line'), 'comet to start');
    this.base = line.replace('listening on ', '').trim();
    this.address = this.base.replace('http://', '');
  }

  /** Kills the server (SIGKILL by default) and starts it again on the same port. */
  async restart(signal = 'SIGKILL') {
    await this.stop(signal);
    await this.startAgain();
  }

  /** Starts the server again on the same port, after `stop`. */
  async startAgain() {
    await this.#spawn(this.address);
  }

  async stop(signal = 'SIGTERM') {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = once(this.process, 'exit');
    this.resume(); // a stopped process would not act on the signal
    this.process.kill(signal);
    await exited;
  }

  /**
   * Freezes the server (SIGSTOP): its sockets stay open, nothing is
   * answered. Resolves once every thread of it is stopped: the signal only
   * asks, and on a busy machine a thread may serve a request or two before
   * it obeys (seen: a publish answered after `kill` had returned).
   */
  async pause() {
    this.process.kill('SIGSTOP');
    await eventually(() => this.#stopped(), 'the server to stop (SIGSTOP)', 5000);
  }

  /** Whether every thread of the server is stopped (state `T` in /proc). */
  #stopped() {
    const tasks = `/proc/${this.process.pid}/task`;
    return readdirSync(tasks).every((task) => {
      const stat = readFileSync(`${tasks}/${task}/stat`, 'utf8');
      // The state follows the command's closing parenthesis.
      return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
    });
  }

  /** Lets a paused server run again (SIGCONT). */
  resume() {
    this.process.kill('SIGCONT');
  }

  async publish(channel, data, event) {
    const { status, body } = await this.publishAnswer(channel, data, event);
    if (status !== 201) throw new Error(`publish answered ${status}: ${JSON.stringify(body)}`);
    return body.id;
  }

  /** Publishes and returns the answer, whatever its status: `{status, body}`. */
  async publishAnswer(channel, data, event) {
    const query = event ? `?event=${encodeURIComponent(event)}` : '';
    const response = await fetch(`${this.base}/pub/${channel}${query}`, { method: 'POST', body: data });
    return { status: response.status, body: await response.json() };
  }

  async metric(line) {
    const text = await (await fetch(`${this.base}/metrics`)).text();
    return text.includes(line);
  }

  /** Waits until the metrics contain `line`. */
  async waitForMetric(line) {
    await eventually(() => this.metric(line), `metric ${line}`);
  }
}

// Data directories made by `dataDir`, removed when the test process exits.
const madeDirs = new Set();
process.on('exit', () => {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

/** A fresh data directory, removed when the test process exits. */
export function dataDir() {
  const dir = mkdtempSync(join(tmpdir(), 'comet-browser-'));
  madeDirs.add(dir);
  return dir;
}

// A page whose document is answered from disk (COMET_PAGE_DIR) has no
// address it came from, so Chromium's Local Network Access checks count it
// as public and block its WebSockets to the loopback server (fetches are
// let through): such runs turn the checks off. The page served by the
// binary itself is a loopback page, and CI runs it with the checks on.
const pageFromDisk = devFiles.has('/');

/** Headless Chromium, as the project runs it. */
export async function launch() {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
  if (pageFromDisk) args.push('--disable-features=LocalNetworkAccessChecks,LocalNetworkAccessChecksWebSockets');
  return chromium.launch({ executablePath: chromiumPath, args });
}

/** A new page of `context` (a browser or a browser context), with the
 * development switches applied. */
export async function openPage(context) {
  const page = await context.newPage();
  if (devFiles.size > 0) {
    await page.route(
      (url) => devFiles.has(url.pathname),
      async (route) => {
        const response = await route.fetch();
        const file = devFiles.get(new URL(route.request().url()).pathname);
        const { 'content-length': _, ...headers } = response.headers();
        await route.fulfill({ response, headers, body: readFileSync(file) });
      },
    );
  }
  return page;
}

/** A page on `origin`, with the console and page errors collected. */
export async function pageAt(context, url) {
  const page = await openPage(context);
  page.problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  await page.goto(url);
  return page;
}

/**
 * Subscribes in `page` with comet.js (imported from `module`) and records
 * what arrives in `window.received` (messages of `types`), `window.gaps`
 * (`comet-gap`), `window.transports` (`comet-transport`), `window.errors`
 * (`error`: `{message, status, readyState}`) and `window.tokenEvents`
 * (`comet-token`: its reason). With `getToken`, the name of a function
 * exposed to the page (page.exposeFunction), the subscription's getToken
 * calls it and counts its calls in `window.tokenCalls`. Resolves once the
 * subscription is open (with `wait`); fails if it ends first, or after 20 s.
 */
export async function subscribeIn(
  page,
  channels,
  options = {},
  { types = ['message'], module = '/comet.js', wait = true, getToken = null } = {},
) {
  const subscribed = page.evaluate(
    async ({ channels, options, types, module, wait, getToken }) => {
      const { subscribe } = await import(module);
      window.received = [];
      window.gaps = [];
      window.transports = [];
      window.errors = [];
      window.tokenEvents = [];
      window.tokenCalls = 0;
      const withToken = getToken
        ? {
            ...options,
            getToken: () => {
              window.tokenCalls += 1;
              return window[getToken]();
            },
          }
        : options;
      const sub = subscribe(channels, withToken);
      window.sub = sub;
      for (const type of types) {
        sub.addEventListener(type, (e) =>
          window.received.push({ type: e.type, data: e.data, id: e.lastEventId, channel: e.channel }),
        );
      }
      sub.addEventListener('comet-gap', (e) => window.gaps.push({ channel: e.channel, reason: e.reason }));
      sub.addEventListener('comet-transport', (e) => window.transports.push(e.transport));
      sub.addEventListener('error', (e) =>
        window.errors.push({ message: e.message, status: e.status, readyState: sub.readyState }),
      );
      sub.addEventListener('comet-token', (e) => window.tokenEvents.push(e.reason));
      if (!wait) return;
      await new Promise((resolve, reject) => {
        sub.addEventListener('open', resolve, { once: true });
        sub.addEventListener('error', (e) => {
          if (sub.readyState === sub.CLOSED) reject(new Error(`the subscription ended before it opened: ${e.message}`));
        });
      });
    },
    { channels, options, types, module, wait, getToken },
  );
  await withTimeout(subscribed, 'the subscription to open');
}

/** Waits until `page` has received `count` messages; returns them. */
export async function received(page, count) {
  await page.waitForFunction((n) => window.received.length >= n, count, { timeout: 20000 });
  return page.evaluate(() => window.received);
}

/** Waits until `predicate` (run in `page`, with `arg`) is true. */
export async function pageEventually(page, predicate, arg, what) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: 20000, polling: 25 });
  } catch (error) {
    throw new Error(`timed out waiting for ${what}: ${error.message.split('\n')[0]}`);
  }
}

/** A static server for pages of another origin: `files` maps paths to [type, body]. */
export async function staticServer(files) {
  const server = createServer((request, response) => {
    const path = new URL(request.url, 'http://x').pathname;
    const file = files[path];
    if (!file && path === '/favicon.ico') {
      // Asked for by the browser on its own, whenever it likes: a 404 would
      // be a console error in some runs and not in others.
      response.writeHead(204).end();
      return;
    }
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': file[0] }).end(file[1]);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return { origin: `http://127.0.0.1:${port}`, close: () => server.close() };
}

/**
 * A proxy in front of `target` that buffers every answer whole (head and
 * body) before passing it on, as a misconfigured proxy does: streams never
 * arrive, complete answers do.
 */
export async function bufferingProxy(target) {
  const server = createServer((request, response) => {
    const upstream = new URL(request.url, target);
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', async () => {
      try {
        const headers = { ...request.headers };
        // Hop-by-hop headers stay here; so does Origin: the page and the
        // server are one site behind this proxy.
        for (const hop of ['host', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'content-length', 'origin']) {
          delete headers[hop];
        }
        const answer = await fetch(upstream, {
          method: request.method,
          headers,
          body: chunks.length ? Buffer.concat(chunks) : undefined,
        });
        const body = Buffer.from(await answer.arrayBuffer());
        response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? '' });
        response.end(body);
      } catch {
        response.destroy();
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** The client's source (from COMET_JS_FILE when set), for pages of other origins. */
export const cometJs = () => readFileSync(devFiles.get('/comet.js') ?? join(root, 'clients/js/comet.js'), 'utf8');

/** Resolves `promise`, or fails after 20 s naming `what`. */
export async function withTimeout(promise, what, ms = 20000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns true; fails after `ms` (20 s). */
export async function eventually(check, what, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
