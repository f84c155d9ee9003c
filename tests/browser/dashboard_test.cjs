// The dashboard in Debian's chromium against a real dexec-broker and a real
// dexec-worker running real jobs (run by dashboard_test.sh, which installs
// playwright-core). Every process started here is stopped by its PID; every
// wait polls with a deadline; screenshots go to TEST_UNDECLARED_OUTPUTS_DIR.
// Writes JUnit XML (one <testcase> per step) to $DEXEC_JUNIT.
'use strict';

const {chromium} = require('playwright-core');
const {spawn, execFile} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const env = process.env;
const tmp = fs.mkdtempSync(path.join(env.TEST_TMPDIR || os.tmpdir(), 'dashboard-'));
const shots = env.TEST_UNDECLARED_OUTPUTS_DIR || tmp;
const children = [];
const cases = [];

function startProcess(name, argv) {
  const log = fs.openSync(path.join(shots, `${name}.stderr.log`), 'w');
  const child = spawn(argv[0], argv.slice(1), {stdio: ['ignore', 'pipe', log]});
  children.push(child);
  child.lines = [];
  child.waiters = [];
  readline.createInterface({input: child.stdout}).on('line', (line) => {
    child.lines.push(line);
    for (const w of child.waiters.splice(0)) w();
  });
  return child;
}

function stopAll() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try { process.kill(c.pid, 'SIGKILL'); } catch (e) { /* already gone */ }
    }
  }
}
process.on('exit', stopAll);

async function firstLine(child, ms) {
  const deadline = Date.now() + ms;
  while (child.lines.length === 0) {
    if (child.exitCode !== null) throw new Error(`process exited with ${child.exitCode} before printing a line`);
    if (Date.now() > deadline) throw new Error(`no line within ${ms} ms`);
    await new Promise((resolve) => {
      child.waiters.push(resolve);
      setTimeout(resolve, 100);  // also notice an exit
    });
  }
  return child.lines[0];
}

// Polls `fn` until it returns a truthy value; fails after `ms`.
async function until(what, fn, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await fn(); } catch (e) { last = e; }
    if (last && !(last instanceof Error)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (last: ${last && last.message || last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let broker = {};

function cli(args, token) {
  const argv = [`--broker=${broker.grpc}`, `--token_file=${token || broker.adminTokenFile}`, ...args];
  return new Promise((resolve) => {
    execFile(env.DEXEC_CLI, argv, {timeout: 20000}, (err, stdout, stderr) => {
      resolve({code: err ? (err.code ?? 1) : 0, stdout, stderr});
    });
  });
}

async function cliOk(args) {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`dexec ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

async function jobState(id) {
  const out = await cliOk(['--json', 'status', String(id)]);
  return JSON.parse(out.split('\n')[0]).state;
}

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    cases.push({name, seconds: (Date.now() - t0) / 1000});
    console.log(`PASS ${name}`);
  } catch (e) {
    cases.push({name, seconds: (Date.now() - t0) / 1000, failure: e.stack || String(e)});
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

function writeJunit() {
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
  const failures = cases.filter((c) => c.failure).length;
  const total = cases.reduce((a, c) => a + c.seconds, 0);
  const lines = ['<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites tests="${cases.length}" failures="${failures}" errors="0" time="${total.toFixed(3)}">`,
    `  <testsuite name="dashboard_browser" tests="${cases.length}" failures="${failures}" errors="0" time="${total.toFixed(3)}">`];
  for (const c of cases) {
    lines.push(`    <testcase name="${esc(c.name)}" classname="dashboard_browser" time="${c.seconds.toFixed(3)}">`);
    if (c.failure) lines.push(`      <failure message="${esc(c.failure.split('\n')[0])}">${esc(c.failure)}</failure>`);
    lines.push('    </testcase>');
  }
  lines.push('  </testsuite>', '</testsuites>', '');
  fs.writeFileSync(env.DEXEC_JUNIT || path.join(shots, 'test.xml'), lines.join('\n'));
  return failures;
}

function expect(cond, msg) { if (!cond) throw new Error(msg); }

async function main() {
  const auth = path.join(tmp, 'auth');
  let failed = false;
  let browser = null;
  const ids = {};
  await step('broker and worker start', async () => {
    const b = startProcess('broker', [env.DEXEC_BROKER, '--listen=127.0.0.1:0', '--worker_listen=tcp://127.0.0.1:*',
      '--http_listen=127.0.0.1:0', `--data_dir=${path.join(tmp, 'data')}`, `--auth_dir=${auth}`]);
    const line = await firstLine(b, 20000);
    const field = (k) => (line.match(new RegExp(`\\b${k}=(\\S+)`)) || [])[1];
    broker = {grpc: field('grpc'), workers: field('workers'), http: field('http'),
      adminTokenFile: path.join(auth, 'client.token')};
    expect(broker.grpc && broker.workers && broker.http, `unexpected broker line: ${line}`);
    broker.base = `http://${broker.http}`;
    broker.adminToken = fs.readFileSync(broker.adminTokenFile, 'utf8').trim();
    startProcess('worker', [env.DEXEC_WORKER, `--broker=${broker.workers}`, '--threads=4', '--name=worker-0',
      `--auth_dir=${auth}`, '--allow_exec']);
    await until('the worker registers', async () => (await cliOk(['workers'])).includes('worker-0'));
    const readToken = await cliOk(['token', 'create', '--role=read', 'viewer']);
    broker.readToken = readToken.split('\n').pop().trim();
  });
  if (cases.some((c) => c.failure)) { writeJunit(); process.exit(1); }

  await step('real jobs run', async () => {
    ids.echo = [];
    for (let i = 0; i < 3; ++i) ids.echo.push(await cliOk(['submit', 'sys.echo', `hello-${i}`]));
    ids.out = await cliOk(['exec', '--', 'sh', '-c', 'echo out-text; echo err-text >&2']);
    ids.fail = await cliOk(['exec', '--', 'false']);
    ids.cancel = await cliOk(['submit', 'sys.sleep', '60000']);
    ids.readonly = await cliOk(['submit', 'sys.sleep', '60000']);
    for (const id of [...ids.echo, ids.out]) await until(`job ${id} succeeds`, async () => (await jobState(id)) === 'SUCCEEDED');
    await until(`job ${ids.fail} fails`, async () => (await jobState(ids.fail)) === 'FAILED');
    for (const id of [ids.cancel, ids.readonly]) await until(`job ${id} runs`, async () => (await jobState(id)) === 'RUNNING');
  });

  const launch = async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'chromium-profile-'));
    return chromium.launchPersistentContext(dir, {
      executablePath: env.DEXEC_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      viewport: {width: 1200, height: 800},
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  };

  let page = null;
  await step('login with an admin token sets an HttpOnly SameSite=Strict cookie', async () => {
    browser = await launch();
    page = browser.pages()[0] || await browser.newPage();
    await page.goto(broker.base + '/');
    await page.locator('#login').waitFor({state: 'visible', timeout: 10000});
    await page.fill('#token', 'not-a-token');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-error').filter({hasText: /./}).waitFor({timeout: 10000});
    await page.fill('#token', broker.adminToken);
    await page.click('#login-form button[type=submit]');
    await page.locator('#overview').waitFor({state: 'visible', timeout: 10000});
    const cookie = (await browser.cookies(broker.base)).find((c) => c.name === 'dexec_token');
    expect(cookie, 'no dexec_token cookie');
    expect(cookie.httpOnly, 'the dexec_token cookie is not HttpOnly');
    expect(cookie.sameSite === 'Strict', `the cookie is SameSite=${cookie.sameSite}`);
    expect(!(await page.evaluate(() => document.cookie)).includes('dexec_token'), 'script can read the token');
  });

  await step('overview shows the broker counts', async () => {
    await until('running shows 2', async () => (await page.textContent('#s-running')).trim() === '2');
    expect((await page.textContent('#s-succeeded')).trim() === '4', 'succeeded is not 4');
    expect((await page.textContent('#s-failed')).trim() === '1', 'failed is not 1');
    expect((await page.textContent('#s-workers')).trim() === '1 / 4', 'workers / threads is not 1 / 4');
    await until('the chart has points', async () => page.evaluate(() => {
      const c = document.getElementById('chart');
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      // Pixels of the "running" line (#2364aa), not of the frame or text:
      // two samples or more draw it across the chart.
      let line = 0;
      for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] && Math.abs(px[i] - 0x23) < 24 && Math.abs(px[i + 1] - 0x64) < 24 &&
            Math.abs(px[i + 2] - 0xaa) < 24) ++line;
      }
      return line > 10;
    }));
    await page.screenshot({path: path.join(shots, 'overview.png')});
  });

  await step('jobs page filters by state and task and pages', async () => {
    await page.click('nav a[data-page=jobs]');
    const rows = page.locator('#jobs-rows tr');
    await until('7 jobs listed', async () => (await rows.count()) === 7);
    await page.selectOption('#f-state', 'succeeded');
    await page.click('#jobs-filter button[type=submit]');
    await until('4 succeeded jobs', async () => (await rows.count()) === 4);
    await page.fill('#f-task', 'sys.echo');
    await page.click('#jobs-filter button[type=submit]');
    await until('3 sys.echo jobs', async () => (await rows.count()) === 3 &&
      (await page.locator('#jobs-rows').textContent()).includes('sys.echo'));
    await page.selectOption('#f-limit', '25');
    await page.selectOption('#f-state', '');
    await page.fill('#f-task', '');
    await page.goto(broker.base + '/#/jobs?limit=2');
    await until('a page of 2', async () => (await rows.count()) === 2);
    const first = await rows.first().getAttribute('data-job-id');
    await page.click('#jobs-next');
    await until('the next page starts older', async () => {
      const id = await rows.first().getAttribute('data-job-id');
      return id && Number(id) < Number(first) - 1;
    });
    await page.goto(broker.base + '/#/jobs');
    await until('7 jobs listed', async () => (await rows.count()) === 7);
    await page.screenshot({path: path.join(shots, 'jobs.png')});
  });

  await step('a job page shows spec, attempts, worker and output', async () => {
    await page.click(`#jobs-rows a[href="#/jobs/${ids.out}"]`);
    await page.locator('#job').waitFor({state: 'visible'});
    await until('stdout preview', async () => (await page.textContent('#j-preview')).includes('out-text'));
    expect((await page.textContent('#j-preview')).includes('err-text'), 'no stderr preview');
    expect((await page.textContent('#j-state')).trim() === 'succeeded', 'state is not succeeded');
    expect((await page.textContent('#j-fields')).includes('worker-0'), 'no worker');
    expect((await page.textContent('#j-fields')).includes('sys.exec'), 'no task');
    expect((await page.locator('#j-attempts tr').count()) === 1, 'not one attempt');
    await page.screenshot({path: path.join(shots, 'job-output.png')});
    await page.goto(`${broker.base}/#/jobs/${ids.fail}`);
    await until('the error', async () => (await page.textContent('#j-error')).includes('exit_code'));
  });

  await step('cancel on a running job cancels it at the broker', async () => {
    await page.goto(`${broker.base}/#/jobs/${ids.cancel}`);
    const btn = page.locator('#j-cancel');
    await btn.waitFor({state: 'visible', timeout: 10000});
    await page.screenshot({path: path.join(shots, 'job-running.png')});
    await btn.click();
    await until('the broker reports CANCELLED', async () => (await jobState(ids.cancel)) === 'CANCELLED');
    await until('the page shows cancelled', async () => (await page.textContent('#j-state')).trim() === 'cancelled');
    expect(await btn.isHidden(), 'cancel is still offered for a cancelled job');
  });

  await step('workers page shows threads, busy, heartbeat age, state', async () => {
    await page.click('nav a[data-page=workers]');
    const r = page.locator('#workers-rows tr');
    await until('one worker row', async () => (await r.count()) === 1);
    const text = await r.first().textContent();
    expect(text.includes('worker-0'), `no worker-0 in ${text}`);
    const cells = await r.first().locator('td').allTextContents();
    expect(cells[3] === 'busy', `state ${cells[3]} (one sys.sleep runs on 4 threads)`);
    expect(cells[4] === '4', `threads ${cells[4]}`);
    expect(cells[5] === '1', `busy ${cells[5]} (one sys.sleep still runs)`);
    expect(/s$/.test(cells[7]), `heartbeat age ${cells[7]}`);
    await page.screenshot({path: path.join(shots, 'workers.png')});
  });
  if (browser) await browser.close();

  await step('a read token sees jobs but no working cancel', async () => {
    browser = await launch();
    page = browser.pages()[0] || await browser.newPage();
    await page.goto(broker.base + '/');
    await page.fill('#token', broker.readToken);
    await page.click('#login-form button[type=submit]');
    await page.locator('#overview').waitFor({state: 'visible', timeout: 10000});
    expect((await page.textContent('#who')).includes('read'), 'role not shown');
    await page.goto(`${broker.base}/#/jobs/${ids.readonly}`);
    await until('the running job', async () => (await page.textContent('#j-state')).trim() === 'running');
    expect(await page.locator('#j-cancel').isHidden(), 'a read token is offered cancel');
    // The API refuses too, whatever the page shows.
    const status = await page.evaluate(async (id) =>
      (await fetch(`/api/jobs/${id}/cancel`, {method: 'POST', credentials: 'same-origin'})).status, ids.readonly);
    expect(status === 403, `cancel with a read token answered ${status}`);
    expect((await jobState(ids.readonly)) === 'RUNNING', 'the job stopped running');
    await page.screenshot({path: path.join(shots, 'job-read-token.png')});
  });
  if (browser) await browser.close();

  await step('the broker still answers', async () => {
    expect((await cliOk(['stats'])).length > 0, 'no stats');
  });

  const failures = writeJunit();
  stopAll();
  process.exit(failures ? 1 : 0);
}

main().catch((e) => {
  cases.push({name: 'harness', seconds: 0, failure: e.stack || String(e)});
  writeJunit();
  stopAll();
  process.exit(1);
});
