// Times the UI's first loads in headless Chromium (see e2e/benches/ui.rs):
// a fresh page each round, signed in with CORRAL_TOKEN; the cluster page
// until its figures and roles show, the jobs page until its first row, the
// nodes page until its first allocation bar. Prints one JSON line: each
// page's times in ms, in round order.
import { chromium } from 'playwright-core';

const url = process.env.CORRAL_URL;
const token = process.env.CORRAL_TOKEN;
const rounds = Number(process.env.ROUNDS || 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = { cluster: [], jobs: [], nodes: [] };
for (let i = 0; i < rounds; i++) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
  // Signed in already: the token in the tab's session storage.
  await context.addInitScript((t) => sessionStorage.setItem('corral.token', t), token);
  const page = await context.newPage();
  const time = async (what, to, selector) => {
    const t0 = Date.now();
    await page.goto(`${url}/ui/${to}`);
    await page.waitForSelector(selector, { timeout: 60000 });
    out[what].push(Date.now() - t0);
  };
  await time('cluster', '#/', '.card[data-resource=cpus]');
  await time('jobs', '#/jobs', 'tr[data-job]');
  await time('nodes', '#/nodes', 'tr[data-node] .bar');
  await context.close();
}
console.log(JSON.stringify(out));
await browser.close();
