// Drives Corral's web UI in headless Chromium against a live cluster (see
// e2e/tests/ui.rs, which starts `corral up`, applies the examples and runs
// this with CORRAL_URL, CORRAL_TOKEN and SCREENSHOTS set). Prints one JSON
// line of timings; exits non-zero at the first failed check, with its
// screenshot in SCREENSHOTS.
import { chromium } from 'playwright-core';

const url = process.env.CORRAL_URL;
const token = process.env.CORRAL_TOKEN;
const shots = process.env.SCREENSHOTS;
const WAIT = 60000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // As root, in a closed network: no sandbox, nothing fetched in the background.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// Refused requests (the wrong token's 401) are the server's answers, not the page's faults.
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
});

async function step(name, fn) {
  try {
    await fn();
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  } catch (e) {
    await page.screenshot({ path: `${shots}/${name}-failed.png`, fullPage: true }).catch(() => {});
    console.error(`step ${name} failed: ${e.message}\n${problems.join('\n')}`);
    await browser.close();
    process.exit(1);
  }
}

const timings = {};

await step('signin', async () => {
  const t0 = Date.now();
  await page.goto(`${url}/ui/`);
  await page.waitForSelector('form.signin', { timeout: WAIT });
  timings.signinPageMs = Date.now() - t0;
  // A wrong token is refused, saying so.
  await page.fill('input[name=token]', 'not-a-token');
  await page.click('button[type=submit]');
  await page.waitForSelector('form.signin .error', { timeout: WAIT });
  await page.fill('input[name=token]', token);
});

await step('overview', async () => {
  const t0 = Date.now();
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-user]', { timeout: WAIT });
  await page.waitForSelector('.card[data-resource=cpus]', { timeout: WAIT });
  await page.waitForSelector('tr[data-role=web]', { timeout: WAIT });
  timings.overviewMs = Date.now() - t0;
  const user = await page.textContent('[data-user]');
  if (!user.includes('admin')) throw new Error(`signed in as ${user}`);
  const cpus = await page.textContent('.card[data-resource=cpus] .big');
  if (!/\//.test(cpus)) throw new Error(`cpus card: ${cpus}`);
});

await step('charts', async () => {
  // The last hour's charts, from the server's samples (a second one within
  // the page's next poll).
  await page.waitForSelector('.chart canvas', { timeout: WAIT });
});

// A marker a reload would clear: every later change must arrive live.
await page.evaluate(() => { window.stillTheSamePage = true; });

await step('jobs', async () => {
  await page.click('nav a[href="#/jobs"]');
  await page.waitForSelector('tr[data-job="analytics/sparkie"]', { timeout: WAIT });
  await page.waitForSelector('tr[data-job="web/frontend"]', { timeout: WAIT });
});

await step('job-live', async () => {
  // A new job, created through the API as the signed-in user, appears and
  // its task moves through its phases on the open page.
  const created = await page.evaluate(async (t) => {
    const job = {
      apiVersion: 'corral.dev/v1alpha1', kind: 'Job',
      metadata: { name: 'ui-demo', namespace: 'analytics' },
      spec: { role: 'analytics', environment: 'prod', kind: 'adhoc', instances: 1,
        resources: { cpus: 0.25, memory: '64Mi' },
        container: { image: 'busybox', command: ['sh', '-c', 'echo hello from the ui test; for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done'] } },
    };
    const r = await fetch('/apis/corral.dev/v1alpha1/namespaces/analytics/jobs', {
      method: 'POST', headers: { Authorization: `Bearer ${t}`, 'Content-Type': 'application/json' }, body: JSON.stringify(job) });
    return r.status;
  }, token);
  if (created !== 201) throw new Error(`creating the job: ${created}`);
  await page.waitForSelector('tr[data-job="analytics/ui-demo"]', { timeout: WAIT });
  await page.click('tr[data-job="analytics/ui-demo"] a');
  await page.waitForSelector('tr[data-task="ui-demo-0-0"] .phase.RUNNING', { timeout: WAIT });
  await page.screenshot({ path: `${shots}/job-running.png`, fullPage: true });
  // Its page, while it runs: the log followed as the task writes it, then
  // the task's end, all on the open page.
  await page.click('tr[data-task="ui-demo-0-0"] a');
  await page.waitForSelector('h2 + label input[type=checkbox], .row input[type=checkbox]', { timeout: WAIT });
  await page.check('.row input[type=checkbox]');
  await page.waitForFunction(() => document.querySelector('pre.log')?.textContent.includes('tick 5'), null, { timeout: WAIT });
  await page.waitForSelector('h1 .phase.FINISHED', { timeout: WAIT });
  if (!await page.evaluate(() => window.stillTheSamePage)) throw new Error('the page was reloaded');
});

await step('timeline', async () => {
  await page.waitForSelector('[data-timeline] li', { timeout: WAIT });
  const phases = await page.$$eval('[data-timeline] li .phase', (els) => els.map((e) => e.textContent));
  for (const p of ['PENDING', 'ASSIGNED', 'STARTING', 'RUNNING', 'FINISHED']) {
    if (!phases.includes(p)) throw new Error(`timeline ${phases.join(',')} lacks ${p}`);
  }
  const actors = await page.textContent('[data-timeline]');
  if (!actors.includes('scheduler')) throw new Error(`no actors in the timeline: ${actors}`);
  const latency = await page.textContent('[data-latency]');
  if (!/\d+\.\d+ s \/ \d+\.\d+ s \/ \d+\.\d+ s/.test(latency)) throw new Error(`latency: ${latency}`);
  await page.waitForFunction(() => document.querySelector('pre.log')?.textContent.includes('hello from the ui test'), null, { timeout: WAIT });
});

await step('pending', async () => {
  // A task that fits nowhere waits, and its page says why.
  const created = await page.evaluate(async (t) => {
    const job = {
      apiVersion: 'corral.dev/v1alpha1', kind: 'Job',
      metadata: { name: 'too-big', namespace: 'analytics' },
      spec: { role: 'analytics', environment: 'prod', kind: 'adhoc', instances: 1,
        resources: { cpus: 6, memory: '64Mi' }, container: { image: 'busybox', command: ['true'] } },
    };
    const r = await fetch('/apis/corral.dev/v1alpha1/namespaces/analytics/jobs', {
      method: 'POST', headers: { Authorization: `Bearer ${t}`, 'Content-Type': 'application/json' }, body: JSON.stringify(job) });
    return r.status;
  }, token);
  if (created !== 201) throw new Error(`creating the job: ${created}`);
  await page.evaluate(() => { location.hash = '#/tasks/analytics/too-big-0-0'; });
  await page.waitForSelector('[data-why]', { timeout: WAIT });
  const why = await page.textContent('[data-why]');
  if (!why.includes('cpus')) throw new Error(`the explanation: ${why}`);
  if (!await page.evaluate(() => window.stillTheSamePage)) throw new Error('the page was reloaded');
});

await step('nodes', async () => {
  await page.click('nav a[href="#/nodes"]');
  await page.waitForSelector('tr[data-node] .bar', { timeout: WAIT });
});

await step('events', async () => {
  await page.click('nav a[href="#/events"]');
  await page.waitForSelector('tr[data-event] .phase.FINISHED', { timeout: WAIT });
});

if (problems.length) {
  console.error(problems.join('\n'));
  await browser.close();
  process.exit(1);
}
console.log(JSON.stringify(timings));
await browser.close();
