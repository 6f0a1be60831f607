// Headless-browser test of dermal's web page (issues 4 and 5), run by
// tests/integration/test_browser.sh.
//
// usage: node page_test.js DERMAL WORKDIR SCREENSHOT
//   WORKDIR holds ham7.onnx (tests/integration/make_server_models.py) and
//   lesion.jpg (a PIL-made image); SCREENSHOT is where the full-page picture
//   of the explained upload goes (a visual check artefact).
//
// Starts `DERMAL serve` on free loopback ports (one open server with a
// history store, one with API_TOKEN set), drives Debian's /usr/bin/chromium
// with playwright-core (never a downloaded browser), and checks: the page and
// its disclaimer, no request leaves the server's origin, upload -> top-k bars
// with long names, the Grad-CAM overlay beside the original at the same size
// and aspect, the opacity slider, the class picker (a new request with
// gradcam_class, the page says which class it explains), the method picker,
// history and model card, and the token prompt on 401.  Prints `ok`/`FAIL`
// lines and a final `test_browser: N passed, N failed` line.
'use strict';
const { chromium } = require('playwright-core');
const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const [DERMAL, W, SHOT] = process.argv.slice(2);
const SLOW = process.env.ASAN_OPTIONS || /asan/.test(DERMAL || '') ? 3 : 1;
const T = ms => ms * SLOW;
const LABELS = ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc'];
let passed = 0, failed = 0;

function check(cond, label, detail) {
  if (cond) { passed++; console.log('ok   ' + label); }
  else {
    failed++;
    console.log('FAIL ' + label + (detail !== undefined ? ': ' + String(
      typeof detail === 'string' ? detail : JSON.stringify(detail)).slice(0, 400) : ''));
  }
  return !!cond;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function startServer(tag, env) {
  const port = await freePort();
  const log = fs.openSync(path.join(W, tag + '.log'), 'w');
  const p = spawn(DERMAL, ['serve'], {
    env: Object.assign({}, process.env, {
      PORT: String(port), HOST: '127.0.0.1', MODEL_PATH: path.join(W, 'ham7.onnx'),
      DATABASE_URL: 'none', WORKERS: '2'
    }, env || {}),
    stdio: ['ignore', log, log]
  });
  let exited = false;
  p.on('exit', () => { exited = true; });
  const deadline = Date.now() + T(10000);
  while (Date.now() < deadline && !exited) {
    const up = await new Promise(res => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); res(true); });
      c.on('error', () => res(false));
    });
    if (up) return { p, port, url: 'http://127.0.0.1:' + port, tag };
    await new Promise(r => setTimeout(r, 20));
  }
  try { p.kill('SIGKILL'); } catch (e) { /* already gone */ }
  throw new Error(tag + ' server did not start; see ' + path.join(W, tag + '.log'));
}

function stopServer(s) {
  return new Promise(res => {
    if (!s || s.p.exitCode !== null) return res();
    const t = setTimeout(() => { try { s.p.kill('SIGKILL'); } catch (e) { /* gone */ } }, T(10000));
    s.p.on('exit', () => { clearTimeout(t); res(); });
    s.p.kill('SIGTERM');
  });
}

async function main() {
  const image = path.join(W, 'lesion.jpg');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dermal-chromium-'));
  let srv = null, tok = null, ctx = null;
  try {
    srv = await startServer('browser', { DATABASE_URL: 'sqlite:///' + path.join(W, 'hist.db') });
    tok = await startServer('browser-token', { API_TOKEN: 's3cret-token' });
    // launch() refuses --user-data-dir in args; a persistent context on a
    // fresh directory is the same thing.
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--disable-dev-shm-usage'],
      viewport: { width: 1200, height: 900 },
      timeout: T(30000)
    });
    ctx.setDefaultTimeout(T(15000));
    const page = ctx.pages()[0] || await ctx.newPage();
    const errors = [], foreign = [], uploads = [];
    page.on('pageerror', e => errors.push('pageerror: ' + e.message));
    // Expected HTTP errors (the 401 before the token) log "Failed to load
    // resource"; anything else at error level (exceptions, CSP) is a failure.
    page.on('console', m => {
      if (m.type() === 'error' && !/^Failed to load resource/.test(m.text()))
        errors.push('console: ' + m.text());
    });
    page.on('response', r => {
      if (r.status() === 404 && !r.url().includes('/history')) errors.push('404: ' + r.url());
    });
    page.on('request', r => {
      const u = r.url();
      if (!u.startsWith(srv.url + '/') && !u.startsWith(tok.url + '/') &&
          !/^(data|blob|about):/.test(u)) foreign.push(u);
      if (u.includes('/upload')) uploads.push(u);
    });

    // ---- page, disclaimer ------------------------------------------------
    const resp = await page.goto(srv.url + '/');
    check(resp && resp.status() === 200 && /text\/html/.test(resp.headers()['content-type'] || ''),
          'GET / serves the page', resp && resp.status());
    const src = resp ? await resp.text() : '';
    check(!/\.(innerHTML|outerHTML)\s*\+?=|insertAdjacentHTML\s*\(|document\.write/.test(src),
          'page inserts server text with textContent only (no innerHTML)');
    const disc = page.locator('#disclaimer');
    check(await disc.isVisible() && /not a medical diagnosis/i.test(await disc.innerText()),
          'disclaimer visible', await disc.innerText().catch(() => ''));
    await page.waitForFunction(() => document.querySelector('#model table'));
    check(/ham7-test/.test(await page.locator('#model').innerText()),
          'model card shows the model name', await page.locator('#model').innerText());

    // ---- upload: bars with long names --------------------------------------
    const firstAnswer = page.waitForResponse(r => r.url().includes('/upload'));
    await page.setInputFiles('#file', image);
    const r1 = await firstAnswer;
    const j1 = await r1.json().catch(() => ({}));
    await page.waitForSelector('body[data-state="done"]');
    check(r1.status() === 200 && LABELS.includes(j1.label), 'upload answered', [r1.status(), j1.error]);
    const u1 = new URL(uploads[0] || 'http://x/');
    check(u1.searchParams.get('gradcam') === '1' && u1.searchParams.get('alpha') === '1' &&
          !u1.searchParams.has('gradcam_class'),
          'first upload asks for the bare colour map of the predicted class', uploads[0]);
    const bars = await page.locator('#bars .bar').evaluateAll(bs => bs.map(b => ({
      label: b.dataset.label, text: b.querySelector('.lbl').innerText,
      width: b.querySelector('.fill').style.width })));
    const names = {};
    for (const t of j1.top || []) names[t.label] = t.name;
    check(bars.length === 5 && bars.every(b => LABELS.includes(b.label) && names[b.label] &&
          names[b.label] !== b.label && b.text.includes(names[b.label]) && /%/.test(b.text)),
          'top-5 bars with long names and probabilities', bars);
    check(bars.length && bars[0].label === j1.label &&
          (await page.locator('#label').innerText()).includes(names[j1.label]),
          'top-1 shown with its long name', await page.locator('#label').innerText());
    await page.selectOption('#topk', '0');
    check(await page.locator('#bars .bar').count() === 7, 'all 7 classes on request');

    // ---- overlay beside the original --------------------------------------
    const heat = page.locator('#heat'), orig = page.locator('#orig');
    await page.waitForFunction(() => {
      const h = document.getElementById('heat');
      return h.complete && h.naturalWidth > 0 && !h.hidden;
    });
    check(await heat.isVisible() && await orig.isVisible() &&
          (await heat.getAttribute('src')).startsWith('data:image/png;base64,'),
          'overlay image shown (data: PNG from heatmap_png)');
    await page.waitForFunction(() => document.getElementById('orig').naturalWidth > 0);
    const bo = await orig.boundingBox(), bh = await heat.boundingBox(),
          bb = await page.locator('#ovbase').boundingBox();
    check(bo && bh && bh.x >= bo.x + bo.width - 1 && Math.abs(bh.y - bo.y) < 2,
          'overlay beside the original (same row, to its right)', [bo, bh]);
    check(bo && bh && bb && Math.abs(bh.width - bo.width) < 2 && Math.abs(bh.height - bo.height) < 2 &&
          Math.abs(bh.x - bb.x) < 1 && Math.abs(bh.y - bb.y) < 1 &&
          Math.abs(bh.width - bb.width) < 1 && Math.abs(bh.height - bb.height) < 1,
          'heat layer covers the copy of the original exactly, same size as the original', [bo, bb, bh]);
    const nat = await page.evaluate(() => {
      const h = document.getElementById('heat'), o = document.getElementById('orig');
      return [h.naturalWidth, h.naturalHeight, o.naturalWidth, o.naturalHeight];
    });
    check(Math.abs(nat[0] / nat[1] - nat[2] / nat[3]) < 0.02, 'heatmap has the image\'s aspect', nat);
    check(j1.gradcam && j1.gradcam.class === j1.label && j1.heatmap_status === 'ok' &&
          await page.locator('#explained').getAttribute('data-class') === j1.label,
          'explains the predicted class by default', j1.gradcam);
    check(await page.locator('#camclass').inputValue() === j1.label, 'class picker defaults to the prediction');
    const opts = await page.locator('#camclass option').evaluateAll(os2 => os2.map(o => [o.value, o.text]));
    check(opts.length === 7 && opts.every(([v, t]) => LABELS.includes(v) && names[v] && t.includes(names[v])),
          'class picker lists the 7 labels with long names', opts);

    // ---- opacity slider ---------------------------------------------------------
    const opacity = () => heat.evaluate(h => getComputedStyle(h).opacity);
    check(await opacity() === '0.5', 'heat layer starts at 50% opacity', await opacity());
    await page.locator('#opacity').fill('80');
    check(await opacity() === '0.8' && await page.locator('#opval').innerText() === '80%',
          'slider to 80 -> heat layer opacity 0.8', await opacity());
    await page.locator('#opacity').fill('0');
    check(await opacity() === '0', 'slider to 0 -> heat layer hidden', await opacity());
    await page.locator('#opacity').fill('60');
    check(uploads.length === 1, 'the slider blends in the page (no new request)', uploads.length);

    // ---- class picker: explain another class ----------------------------------
    const other = j1.top[j1.top.length - 1].label; // the least probable class
    const before = await heat.getAttribute('src');
    const waitOther = page.waitForResponse(r => r.url().includes('gradcam_class=' + other));
    await page.selectOption('#camclass', other);
    const r2 = await waitOther;
    const j2 = await r2.json().catch(() => ({}));
    await page.waitForSelector('#explained[data-class="' + other + '"]');
    await page.waitForSelector('body[data-state="done"]');
    check(r2.status() === 200 && j2.gradcam && j2.gradcam.class === other && j2.label === j1.label,
          'choosing ' + other + ' re-requests the same file with gradcam_class', [r2.status(), j2.gradcam]);
    const ex = await page.locator('#explained').innerText();
    check(ex.includes(names[other]) && /not the predicted class/.test(ex),
          'page says which class it explains', ex);
    check(await page.locator('#camclass').inputValue() === other &&
          await heat.getAttribute('src') !== before,
          'new heat layer for ' + other + ', picker keeps the choice');
    check(await heat.evaluate(h => getComputedStyle(h).opacity) === '0.6', 'opacity kept across requests');
    check(await page.locator('#bars .bar.explained').getAttribute('data-label') === other,
          'explained class marked in the bars');

    // ---- method picker ------------------------------------------------------------
    const waitPP = page.waitForResponse(r => r.url().includes('gradcam_method=gradcampp'));
    await page.selectOption('#cammethod', 'gradcampp');
    const r3 = await waitPP;
    const j3 = await r3.json().catch(() => ({}));
    await page.waitForSelector('#explained[data-method="gradcampp"]');
    check(r3.status() === 200 && j3.gradcam && j3.gradcam.method === 'gradcampp' &&
          j3.gradcam.class === other && /Grad-CAM\+\+/.test(await page.locator('#explained').innerText()),
          'method picker asks for Grad-CAM++ for the chosen class', j3.gradcam);

    // ---- history, screenshot -------------------------------------------------------
    await page.waitForFunction(() => document.querySelectorAll('#history tr').length >= 2);
    check((await page.locator('#history').innerText()).includes(names[j1.label]),
          'history lists the prediction with its long name');
    await page.selectOption('#topk', '5');
    fs.mkdirSync(path.dirname(SHOT), { recursive: true });
    await page.screenshot({ path: SHOT, fullPage: true });
    check(fs.existsSync(SHOT) && fs.statSync(SHOT).size > 10000, 'screenshot saved to ' + SHOT);

    // ---- token prompt on 401 -----------------------------------------------------
    await page.goto(tok.url + '/');
    await page.setInputFiles('#file', image);
    await page.waitForSelector('body[data-state="error"]');
    check(await page.locator('#tokrow').isVisible() && /token/i.test(await page.locator('#status').innerText()),
          '401 shows the token prompt', await page.locator('#status').innerText());
    await page.locator('#token').fill('s3cret-token');
    await page.locator('#token').dispatchEvent('change');
    await page.click('#retry');
    await page.waitForSelector('body[data-state="done"]');
    check(await page.locator('#tokrow').isHidden() && await page.locator('#bars .bar').count() > 0,
          'retry with the token succeeds');

    check(foreign.length === 0, 'no request leaves the server\'s origin', foreign);
    check(errors.length === 0, 'no script errors or CSP violations in the console', errors);
  } catch (e) {
    check(false, 'browser test ran to the end', e && e.stack ? e.stack.split('\n').slice(0, 4).join(' | ') : e);
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    await stopServer(srv);
    await stopServer(tok);
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log('test_browser: ' + passed + ' passed, ' + failed + ' failed');
  process.exitCode = failed ? 1 : 0;
}

main();
