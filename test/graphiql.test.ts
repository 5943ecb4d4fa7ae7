import postgres from 'postgres';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway';
import { waitForSubscriptions } from './support/live';
import { Receiver } from './support/receiver';
import { waitFor } from './support/wait';

let gateway: TestGateway;
let receiver: Receiver;
let browser: Browser;

beforeAll(async () => {
  gateway = await startTestGateway({ ALLOW_PRIVATE_TARGETS: 'true' });
  receiver = await new Receiver().start();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  await browser?.close();
  await receiver?.stop();
  await gateway?.stop();
});

it('runs a deliveryStatus subscription in GraphiQL and shows a delivery as it happens', { timeout: 90_000 }, async () => {
  const token = await gateway.token();
  const app = postgres(gateway.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await app`create table browser_orders (id serial primary key, item text)`;
    const hook = await gateway.request('POST', '/v2/outgoingWebhooks', { token, body: { Name: 'Browser', OutgoingUrls: [`${receiver.url}/browser`] } });
    await gateway.request('POST', `/v2/outgoingWebhooks/${hook.body.Id}/events`, {
      token,
      body: { EventType: 'table.recordInsert', ObjectName: 'browser_orders' },
    });

    const page = await browser.newPage();
    // Every file comes from the gateway: a request anywhere else is recorded and refused.
    const elsewhere: string[] = [];
    await page.route(
      (url) => url.origin !== new URL(gateway.url).origin && url.protocol !== 'data:',
      (route) => {
        elsewhere.push(route.request().url());
        return route.abort();
      },
    );
    const refusedByPolicy: string[] = [];
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) refusedByPolicy.push(message.text());
    });
    // The token as a user leaves it in GraphiQL's Headers pane (GraphiQL keeps that pane in localStorage).
    await page.addInitScript((bearer) => localStorage.setItem('graphiql:headers', JSON.stringify({ Authorization: bearer })), `Bearer ${token}`);
    await page.goto(`${gateway.url}/graphql`);

    const editor = page.locator('.graphiql-query-editor .monaco-editor').first();
    await editor.waitFor({ timeout: 60_000 });
    await editor.click();
    await page.waitForTimeout(300);
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.keyboard.type(`subscription LiveBrowser { deliveryStatus(webhookId: "${hook.body.Id}") { url attempt status httpStatus } }`, {
      delay: 10,
    });
    await page.keyboard.press('Escape');
    // GraphiQL takes the editor's text a moment after the typing: its tab is named after the operation then.
    await page.locator('.graphiql-tab', { hasText: 'LiveBrowser' }).waitFor();
    await page.getByRole('button', { name: /execute/i }).click();
    await waitForSubscriptions(gateway.url, 1);

    await app`insert into browser_orders (item) values ('from the browser test')`;
    const response = page.locator('.graphiql-response');
    const shown = await waitFor(
      async () => {
        const text = await response.innerText();
        return text.includes('SUCCEEDED') ? text : undefined;
      },
      20_000,
      'GraphiQL to show the delivery',
    );
    expect(shown).toContain(`${receiver.url}/browser`);
    expect(shown).toMatch(/"httpStatus":\s*200/);
    expect(receiver.callsTo('/browser')).toHaveLength(1);
    expect(elsewhere).toEqual([]);
    expect(refusedByPolicy).toEqual([]);
  } finally {
    await app.end();
  }
});

it('serves the page with a content security policy, and its files from the gateway, cached for good', async () => {
  const page = await fetch(`${gateway.url}/graphql`, { headers: { accept: 'text/html' } });
  expect(page.status).toBe(200);
  expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
  const html = await page.text();
  expect(html).not.toMatch(/https?:\/\//); // no CDN, no other origin
  const files = [...html.matchAll(/(?:src|href)="(\/graphiql\/[^"]+)"/g)].map((match) => match[1]!);
  expect(files).toHaveLength(4); // icon, styles, start script, GraphiQL
  for (const file of files) {
    const asset = await fetch(`${gateway.url}${file}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect((await asset.arrayBuffer()).byteLength).toBeGreaterThan(100);
  }
  const missing = await fetch(`${gateway.url}/graphiql/graphiql.0000000000000000.js`);
  expect(missing.status).toBe(404);
  expect(await missing.json()).toMatchObject({ Code: 'ObjectNotFound' });
});
