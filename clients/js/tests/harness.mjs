// What the browser tests share: the real comet binary, headless Chromium
// (Debian's, driven by playwright-core), a bare static server for pages of
// another origin, and small waits that fail loudly instead of hanging.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
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
    await this.#spawn(this.address);
  }

  async stop(signal = 'SIGTERM') {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = once(this.process, 'exit');
    this.process.kill(signal);
    await exited;
  }

  async publish(channel, data, event) {
    const query = event ? `?event=${encodeURIComponent(event)}` : '';
    const response = await fetch(`${this.base}/pub/${channel}${query}`, { method: 'POST', body: data });
    if (response.status !== 201) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
    return (await response.json()).id;
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

/** A fresh data directory. */
export function dataDir() {
  return mkdtempSync(join(tmpdir(), 'comet-browser-'));
}

/** Headless Chromium, as the project runs it. */
export async function launch() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** A page on `origin`, with the console and page errors collected. */
export async function pageAt(context, url) {
  const page = await context.newPage();
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
 * what arrives in `window.received`, `window.gaps`, `window.transports`.
 * Resolves once the subscription is open.
 */
export async function subscribeIn(page, channels, options = {}, { types = ['message'], module = '/comet.js', wait = true } = {}) {
  await page.evaluate(
    async ({ channels, options, types, module, wait }) => {
      const { subscribe } = await import(module);
      window.received = [];
      window.gaps = [];
      window.transports = [];
      window.errors = [];
      const sub = subscribe(channels, options);
      window.sub = sub;
      for (const type of types) {
        sub.addEventListener(type, (e) =>
          window.received.push({ type: e.type, data: e.data, id: e.lastEventId, channel: e.channel }),
        );
      }
      sub.addEventListener('gap', (e) => window.gaps.push({ channel: e.channel, reason: e.reason }));
      sub.addEventListener('transport', () => window.transports.push(sub.transport));
      sub.addEventListener('error', (e) => window.errors.push(e.message));
      if (wait) await new Promise((resolve) => sub.addEventListener('open', resolve, { once: true }));
    },
    { channels, options, types, module, wait },
  );
}

/** Waits until `page` has received `count` messages; returns them. */
export async function received(page, count) {
  await page.waitForFunction((n) => window.received.length >= n, count, { timeout: 20000 });
  return page.evaluate(() => window.received);
}

/** A static server for pages of another origin: `files` maps paths to [type, body]. */
export async function staticServer(files) {
  const server = createServer((request, response) => {
    const file = files[new URL(request.url, 'http://x').pathname];
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

export const cometJs = () => readFileSync(join(root, 'clients/js/comet.js'), 'utf8');

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

/** Polls `check` until it returns true; fails after 20 s. */
export async function eventually(check, what) {
  const deadline = Date.now() + 20000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
