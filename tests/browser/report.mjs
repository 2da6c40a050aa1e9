// Opens a coalmine report in headless Chromium (Debian's, never a downloaded one) and
// prints, as JSON, what a reader of the page sees: the verdict, the events, each chart's
// drawn points, every check's row, and anything the page logged as an error or tried to
// fetch. Usage: node tests/browser/report.mjs REPORT.html SCREENSHOT.png
import path from 'node:path';
import { chromium } from 'playwright-core';

const [report, screenshot] = process.argv.slice(2);
if (!report || !screenshot) {
  console.error('usage: node tests/browser/report.mjs REPORT.html SCREENSHOT.png');
  process.exit(2);
}
// Without these flags Chromium reaches for Google's hosts at every start; this machine's
// network is closed, and a report must need none of it anyway. Playwright gives each
// launch a fresh, empty profile of its own.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors = [];
  const fetched = [];
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('request', (request) => { if (!request.url().startsWith('file:')) fetched.push(request.url()); });
  await page.goto('file://' + path.resolve(report), { waitUntil: 'load' });
  const seen = await page.evaluate(() => {
    const text = (element) => element?.textContent?.trim() ?? null;
    const all = (selector, root = document) => [...root.querySelectorAll(selector)];
    return {
      title: document.title,
      verdict: text(document.querySelector('.verdict')),
      state: document.querySelector('.verdict')?.dataset.verdict ?? null,
      reason: text(document.querySelector('.reason')),
      acts: all('.acts li').map(text),
      events: all('ol.events li').map(text),
      charts: all('figure.chart').map((figure) => {
        const svg = figure.querySelector('svg');
        return {
          id: figure.dataset.chart,
          points: all('circle', figure).length,
          width: svg ? svg.getBoundingClientRect().width : 0,
          caption: text(figure.querySelector('figcaption')),
        };
      }),
      checks: all('table.checks tbody tr').map((row) => ({
        at: Number(row.dataset.at),
        status: row.dataset.status,
        canary_requests: text(row.querySelector('.canary-requests')),
        stable_requests: text(row.querySelector('.stable-requests')),
      })),
      shadow: text(document.querySelector('#shadow .disagreement')),
      examples: all('#shadow table.examples tbody tr').length,
      // What a reader sees without opening a chart's details.
      prose: document.body.innerText,
    };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ...seen, errors, fetched }));
} finally {
  await browser.close();
}
