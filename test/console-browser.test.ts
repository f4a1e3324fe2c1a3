/**
 * The web console in a real browser: Debian's Chromium driven by
 * playwright-core, against a real gateway with the console on, receiving
 * real SMTP and delivering to real HTTP receivers (docs/console.md, "The web
 * console").
 *
 * - a message sent over SMTP appears in the list without a reload, a search
 *   narrows the list without a reload, the message view shows its attempts;
 * - a message whose webhook failed is retried with the button once the
 *   receiver has recovered: its timeline shows the delivery, and its row in
 *   a list open in another tab turns delivered, neither page reloaded;
 * - the hostile-message set (test/fixtures/console/) is rendered and no
 *   script runs: every payload calls a function the test exposes in every
 *   frame and fetches a URL of a counting receiver, and both counts stay at
 *   zero (a control page that does run the payload shows both counters work);
 * - with JavaScript off, the list, the search and the message are readable.
 *
 * With POSTGATE_SCREENSHOTS=1 it also writes docs/images/console-list.png and
 * docs/images/console-message.png.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { sendOne } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { fixturePath, projectRoot } from './helpers/fixtures.js';

const CHROMIUM = '/usr/bin/chromium';
// Without the background-networking flags Chromium reaches for the network at start.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** Generous: two cores shared with other test files. */
const WAIT = 30_000;
const HOSTILE = ['hostile-html.eml', 'hostile-svg.eml', 'hostile-headers.eml'];

function message(subject: string, body = 'Hello from the browser test.', from = 'Alice Example <alice@example.org>'): string {
  return `From: ${from}\r\nTo: inbox@app.test\r\nSubject: ${subject}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@example.org>\r\nDate: Mon, 07 Dec 2026 18:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${body}\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<div style="font-family:sans-serif"><h2 style="color:#2358c4">${subject}</h2><p>${body}</p></div>\r\n--b--\r\n`;
}

function queueId(reply: { code: number; text: string }): string {
  assert.equal(reply.code, 250, reply.text);
  return /queued as (\S+)/.exec(reply.text)![1]!;
}

describe('web console in Chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium)` }, () => {
  let tg: TestGateway;
  let hook: Receiver;
  let canary: Receiver;
  let browser: Browser;
  let context: BrowserContext;
  let base: string;
  let recovered = false;
  const executions: string[] = [];

  before(async () => {
    canary = await startReceiver(() => ({ status: 204 }), { path: '' });
    // The app's webhook: a message whose subject says "flaky" fails until the test says the receiver recovered.
    hook = await startReceiver((r) => ({ status: !recovered && r.body.includes('flaky') ? 503 : 200 }));
    tg = await startGateway({
      console: { listen: '127.0.0.1:0' },
      // The worker's own next try is an hour away: only the Retry button sends the failed item again.
      queue: { retry: { initialDelay: '1h' } },
      routes: [{ recipients: ['*@app.test'], mode: 'queue', targets: [{ id: 'app-webhook', type: 'webhook', url: hook.url, timeout: '5s' }] }],
    });
    const address = (tg.gw as unknown as { consoleAddress(): { port: number } | null }).consoleAddress();
    assert.ok(address, 'the console listens');
    base = `http://127.0.0.1:${address.port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(WAIT);
    // Every hostile payload calls this before anything else; it exists in every frame of every page.
    await context.exposeFunction('__canary', (label: string) => {
      executions.push(String(label));
    });
  });

  after(async () => {
    await browser?.close();
    await tg?.close();
    await hook?.close();
    await canary?.close();
  });

  /** Marks the window, so a test can tell that the page was not reloaded. */
  async function mark(page: Page): Promise<void> {
    await page.evaluate('window.__same = true');
  }
  async function notReloaded(page: Page): Promise<boolean> {
    return (await page.evaluate('window.__same === true')) === true;
  }

  test('a message sent over SMTP appears in the list without a reload, and the search narrows it in place', async () => {
    const earlier: Array<[string, string]> = [
      ['Your order #4821 has shipped', 'Acme Shop <orders@shop.example>'],
      ['Password reset request', 'Accounts <no-reply@accounts.example>'],
      ['Weekly report: inbound volume', 'Reports <reports@metrics.example>'],
    ];
    for (const [s, from] of earlier) queueId(await sendOne(tg.port, 'inbox@app.test', message(s, 'Hello from the browser test.', from)));
    const page = await context.newPage();
    await page.goto(base + '/');
    await page.locator('#rows tr', { hasText: 'Weekly report' }).waitFor();
    await page.locator('#live:not([hidden])').waitFor();
    await mark(page);
    const id = queueId(await sendOne(tg.port, 'inbox@app.test', message('Live arrival 7f3a')));
    const row = page.locator(`#rows tr[data-id="${id}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /Live arrival 7f3a/);
    await page.locator(`#rows tr[data-id="${id}"] .badge-delivered`).waitFor();
    assert.ok(await notReloaded(page), 'the row came without a reload');

    await page.fill('#search input[name="q"]', 'password');
    // (Polled from here: the page's CSP forbids the string evaluation waitForFunction would use.)
    const rows = page.locator('#rows tr[data-id]');
    await waitFor(async () => (await rows.count()) === 1 && /Password reset request/.test(await rows.first().innerText()), WAIT, 'the search to leave one row');
    assert.ok(await notReloaded(page), 'the search answered without a reload');
    assert.equal(new URL(page.url()).searchParams.get('q'), 'password', 'the address bar keeps the search');
    await page.close();
  });

  test('the message view shows headers, bodies and the attempts; Retry delivers a failed message once the receiver recovers', async () => {
    const id = queueId(await sendOne(tg.port, 'inbox@app.test', message('Invoice 2026-113 (flaky webhook)', 'Please find the invoice attached.')));
    const page = await context.newPage();
    await page.goto(base + '/');
    await page.locator(`#rows tr[data-id="${id}"] .badge-deferred`).waitFor();
    await page.click(`#rows tr[data-id="${id}"] .c-subject a`);
    await page.waitForURL(`**/messages/${id}`);
    await page.locator('#attempts li.attempt-deferred', { hasText: '503' }).waitFor();
    assert.match(await page.locator('dl.meta').innerText(), /inbox@app\.test/);
    assert.match(await page.locator('pre.text-body').innerText(), /Please find the invoice attached\./);
    const frame = page.frameLocator('iframe.html-body');
    await frame.locator('h2', { hasText: 'Invoice 2026-113' }).waitFor();
    const hooksBefore = hook.got.length;

    // A second tab keeps the list open: the row's status follows the retry there too.
    const list = await context.newPage();
    await list.goto(base + '/');
    await list.locator(`#rows tr[data-id="${id}"] .badge-deferred`).waitFor();
    await list.locator('#live:not([hidden])').waitFor();
    await mark(list);

    recovered = true;
    await mark(page);
    await page.click('#actions form[data-action="retry"] button');
    await page.locator('#attempts li.attempt-delivered', { hasText: 'app-webhook' }).waitFor();
    await page.locator('#timeline[data-status="delivered"]').waitFor();
    assert.ok(await notReloaded(page), 'the timeline updated in place');
    await list.locator(`#rows tr[data-id="${id}"] .badge-delivered`).waitFor();
    assert.ok(await notReloaded(list), 'the row changed status without a reload');
    await list.close();
    assert.ok(hook.got.length > hooksBefore, 'the receiver got the message again');
    assert.match(await page.locator('#action-result').innerText(), /\S/);

    if (process.env.POSTGATE_SCREENSHOTS === '1') {
      const dir = path.join(projectRoot(), 'docs', 'images');
      await mkdir(dir, { recursive: true });
      await page.screenshot({ path: path.join(dir, 'console-message.png'), fullPage: true });
      const shot = await context.newPage();
      await shot.setViewportSize({ width: 1280, height: 440 });
      await shot.goto(base + '/');
      await shot.locator(`#rows tr[data-id="${id}"] .badge-delivered`).waitFor();
      await shot.screenshot({ path: path.join(dir, 'console-list.png') });
      await shot.close();
    }
    await page.close();
  });

  test('the hostile-message set runs no script and loads nothing remote', async () => {
    const ids: string[] = [];
    for (const name of HOSTILE) {
      const eml = (await readFile(fixturePath('console', name), 'utf8')).replaceAll('{{CANARY}}', `http://127.0.0.1:${canary.port}`);
      ids.push(queueId(await sendOne(tg.port, 'inbox@app.test', eml)));
    }
    const page = await context.newPage();
    await page.goto(base + '/');
    for (const id of ids) await page.locator(`#rows tr[data-id="${id}"]`).waitFor();
    for (const id of ids) {
      await page.goto(`${base}/messages/${id}`);
      await page.locator('#attempts li.attempt-delivered').waitFor();
      const frames = page.locator('iframe.html-body');
      if ((await frames.count()) > 0) {
        // The frame's document has loaded; then its javascript: links are clicked.
        const frame = await (await frames.elementHandle())!.contentFrame();
        await frame!.waitForLoadState('load');
        for (const link of await page.frameLocator('iframe.html-body').locator('a[href^="javascript:"]').all()) await link.click({ timeout: 2000 }).catch(() => undefined);
      }
      // Hover everything the page shows of the message (an attribute payload would need an event).
      await page.click('details.headers summary');
      for (const el of await page.locator('main dd:visible, details.headers td:visible, main h1, .attachments a:visible').all()) await el.hover({ timeout: 1000 }).catch(() => undefined);
      // The body's document opened on its own: the CSP sandbox holds there too.
      if ((await frames.count()) > 0) await page.goto(`${base}/messages/${id}/body`);
    }
    // Let whatever might have been started finish: a pending load or timer would report within this time.
    await page.goto(base + '/');
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(executions, [], 'no payload ran');
    assert.deepEqual(
      canary.got.map((r) => r.headers),
      [],
      'nothing was loaded from the receiver the payloads point at (tracking pixel, stylesheet, frames, refresh)',
    );

    // The control: the same payload on a blank page without our defences is counted by both counters.
    await page.close();
    const control = await context.newPage();
    await control.setContent(`<script>try{__canary('control')}catch(e){};fetch('http://127.0.0.1:${canary.port}/control', { mode: 'no-cors' })</script>`);
    await waitFor(() => executions.length > 0 && canary.got.length > 0, WAIT, 'the control payload to be counted');
    assert.deepEqual(executions, ['control']);
    assert.equal(canary.got.length, 1);
    await control.close();
  });

  test('without JavaScript the list, the search and the message are readable, and the buttons work as forms', async () => {
    const id = queueId(await sendOne(tg.port, 'inbox@app.test', message('Plain reading 99c1', 'Readable without scripts.')));
    const plain = await browser.newContext({ javaScriptEnabled: false });
    plain.setDefaultTimeout(WAIT);
    const page = await plain.newPage();
    await page.goto(base + '/');
    await page.locator(`#rows tr[data-id="${id}"]`).waitFor();
    await page.fill('#search input[name="q"]', 'Plain reading');
    await Promise.all([page.waitForURL('**/?q=Plain+reading*'), page.click('#search button[type="submit"]')]);
    assert.equal(await page.locator('#rows tr[data-id]').count(), 1);
    await Promise.all([page.waitForURL(`**/messages/${id}`), page.click(`#rows tr[data-id="${id}"] .c-subject a`)]);
    assert.match(await page.locator('pre.text-body').innerText(), /Readable without scripts\./);
    assert.match(await page.locator('#attempts').innerText(), /delivered/);
    assert.equal(await page.locator('a', { hasText: 'Raw source' }).count(), 1);
    // The buttons are forms: Delete posts to the API with the CSRF token and comes back to the list.
    await Promise.all([page.waitForURL('**/?done=delete'), page.click('#actions form[data-action="delete"] button')]);
    assert.match(await page.locator('.notice').innerText(), /Message deleted\./);
    assert.equal(await page.locator(`#rows tr[data-id="${id}"]`).count(), 0);
    assert.equal((await page.goto(`${base}/messages/${id}`))?.status(), 404);
    await plain.close();
  });
});
