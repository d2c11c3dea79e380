// The explorer as a person meets it, end to end, in Debian's headless Chromium: the built page
// (dist/, from `trunk build --release`) loads from its own origin only, the timestep slider moves,
// a few DDIM steps run, SDEdit runs from the slider's t, nothing logs an error, and at 360 px
// nothing overflows sideways. Screenshots go to target/e2e/ (the README's come from there).
//
//   node --test tests/e2e/
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { launchChromium, serveDist } from './browser.mjs';

const SHOTS = 'target/e2e';
let server;
let browser;

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  server = await serveDist(process.env.DIST ?? 'dist');
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** A page with its console errors and off-origin requests recorded. */
async function open(viewport, query = 'sampler=ddim&steps=3&eta=0&seed=0', prepare = async () => {}) {
  const page = await browser.newPage({ viewport });
  await prepare(page);
  const problems = [];
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`page error: ${e}`));
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== server.origin) problems.push(`off-origin request: ${r.url()}`);
  });
  // Every refusal of the Content-Security-Policy becomes a console error, so `problems` sees it.
  await page.addInitScript(() =>
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`),
    ),
  );
  // The CPU backend: SwiftShader's WebGPU would take seconds per step.
  await page.goto(`${server.origin}/?backend=cpu&${query}`);
  await page.waitForSelector('#t-slider', { timeout: 120_000 });
  return { page, problems };
}

async function setSlider(page, t) {
  await page.$eval('#t-slider', (el, v) => {
    el.value = String(v);
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, t);
}

async function waitForStatus(page, section, text) {
  await page.waitForFunction(([s, t]) => document.querySelector(`${s} .status`)?.textContent.includes(t), [section, text], {
    timeout: 300_000,
    polling: 100,
  });
}

async function waitForSteps(page, n) {
  await waitForStatus(page, '.reverse', `step ${n} of ${n}`);
}

/** Sets a number input the way a person does: type, then leave the field. */
async function setNumber(page, selector, value) {
  await page.fill(selector, String(value));
  await page.dispatchEvent(selector, 'change');
}

test('load, slide, generate, SDEdit: from its own origin, without errors', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 });
  // The built page carries its policy: own origin, wasm compilation, the worker from a blob URL,
  // trunk's loader by its hash, nothing else.
  const csp = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', 'content');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval' 'sha256-[A-Za-z0-9+/=]+'/);
  assert.match(csp, /worker-src blob:/);
  // The slider's spoken value follows it, with ᾱ_600 of the linear schedule computed here from the βs.
  await setSlider(page, 600);
  let alphaBar = 1;
  for (let i = 0; i <= 600; i++) alphaBar *= 1 - (1e-4 + ((0.02 - 1e-4) * i) / 999);
  assert.equal(await page.getAttribute('#t-slider', 'aria-valuetext'), `t = 600 of 1000, ᾱ = ${alphaBar.toFixed(2)}`);
  // Three DDIM steps from x_T, then SDEdit from t = 600: 600 first, then DDIM-3's steps below it (332).
  await page.click('button.generate');
  await waitForSteps(page, 3);
  assert.match(await page.textContent('button.sdedit'), /t = 600/);
  await page.click('button.sdedit');
  await waitForSteps(page, 2);
  // The chain's first step denoised t = 600 itself (the heading of the forward panel says 600 too,
  // so the reverse step's own heading is read, replayed at step 1).
  await page.$eval('#replay', (el) => {
    el.value = '1';
    el.dispatchEvent(new Event('input', { bubbles: true }));
  });
  assert.match(await page.textContent('.math'), /Reverse step t = 600 → 332/);
  await page.screenshot({ path: `${SHOTS}/explorer.png`, fullPage: true });
  assert.deepEqual(problems, []);
  await page.close();
});

test('one CPU module is fetched (relaxed SIMD where the browser has it), the WebGPU module only where WebGPU runs the U-Net', async () => {
  /** A page with the paths it requested and its console errors recorded. */
  async function recorded(query, { withoutRelaxedSimd = false } = {}) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // A browser without relaxed SIMD (Safari, older Firefox) refuses to validate the loader's probe.
    if (withoutRelaxedSimd) await page.addInitScript(() => (WebAssembly.validate = () => false));
    const paths = [];
    const problems = [];
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (url.protocol === 'http:' && url.origin === server.origin) paths.push(url.pathname);
    });
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    page.on('pageerror', (e) => problems.push(`page error: ${e}`));
    await page.goto(`${server.origin}/?${query}`);
    await page.waitForSelector('#t-slider', { timeout: 180_000 });
    return { page, paths, problems };
  }
  // On the CPU the page's build with relaxed SIMD (Chromium has it; burn's CPU backend alone) is
  // all the code it fetches, not the page's own module as well, and its first load, gzipped as a
  // server sends it, stays within 4 MB.
  const cpu = await recorded('backend=cpu');
  const wasm = (paths) => paths.filter((p) => p.endsWith('.wasm'));
  assert.deepEqual(wasm(cpu.paths).map((p) => p.replace(/[0-9a-f]{16}/, 'HASH')), ['/relaxed-simd/ddpm-relaxed-simd-HASH_bg.wasm']);
  assert.match(await cpu.page.textContent('.badge'), /^\s*CPU \(burn flex, relaxed SIMD, in /);
  const dist = process.env.DIST ?? 'dist';
  const files = [...new Set(cpu.paths.map((p) => (p.endsWith('/') ? `${p}index.html` : p)))];
  const gzipped = await Promise.all(files.map(async (p) => gzipSync(await readFile(`${dist}${p}`), { level: 9 }).length));
  const firstLoad = gzipped.reduce((a, b) => a + b, 0);
  assert.ok(firstLoad <= 4_000_000, `first load ${firstLoad} bytes gzipped: ${files.join(' ')}`);
  console.log(`first load on the CPU: ${(firstLoad / 1e6).toFixed(2)} MB gzip in ${files.length} files`);
  await cpu.page.close();
  // A browser without relaxed SIMD gets the page's own module alone, and a DDIM step runs on it;
  // `?wasm=simd128` asks for that module where relaxed SIMD is there (and stays in the URL).
  const own = ['/ddpm-explorer-HASH_bg.wasm'];
  const simd = await recorded('backend=cpu&sampler=ddim&steps=1&eta=0&seed=0', { withoutRelaxedSimd: true });
  assert.deepEqual(wasm(simd.paths).map((p) => p.replace(/[0-9a-f]{16}/, 'HASH')), own);
  assert.match(await simd.page.textContent('.badge'), /^\s*CPU \(burn flex, SIMD, in /);
  await simd.page.click('button.generate');
  await waitForSteps(simd.page, 1);
  assert.deepEqual(simd.problems, []);
  await simd.page.close();
  const asked = await recorded('backend=cpu&wasm=simd128');
  assert.deepEqual(wasm(asked.paths).map((p) => p.replace(/[0-9a-f]{16}/, 'HASH')), own);
  assert.match(await asked.page.textContent('.badge'), /^\s*CPU \(burn flex, SIMD, in /);
  assert.match(asked.page.url(), /&wasm=simd128/);
  assert.deepEqual(asked.problems, []);
  await asked.page.close();
  // With WebGPU (SwiftShader here, forced: CPU emulation, seconds a step) the page fetches its WebGPU
  // module, one worker runs the U-Net on the adapter, and a DDIM step goes through it.
  const gpu = await recorded('backend=webgpu&sampler=ddim&steps=1&eta=0&seed=0');
  assert.match(await gpu.page.textContent('.badge'), /^\s*WebGPU · .*\(CPU emulation\), in a Web Worker/);
  assert.ok(gpu.paths.some((p) => /^\/webgpu\/ddpm-webgpu-[0-9a-f]{16}_bg\.wasm$/.test(p)), gpu.paths.join(' '));
  await gpu.page.click('button.generate');
  await waitForSteps(gpu.page, 1);
  assert.deepEqual(gpu.problems, []);
  await gpu.page.close();
  // A WebGPU module that does not arrive: the page runs on the CPU and its badge says why.
  const broken = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await broken.route('**/webgpu/*.wasm', (route) => route.fulfill({ status: 404, body: 'gone' }));
  await broken.goto(`${server.origin}/?backend=webgpu`);
  await broken.waitForSelector('#t-slider', { timeout: 180_000 });
  assert.match(await broken.textContent('.badge'), /^\s*CPU \(burn flex, relaxed SIMD, in (a|\d+) Web Workers?\) · WebGPU \(.*\) did not start/);
  await broken.close();
});

test('on the CPU the U-Net runs in a Web Worker: no step blocks the page for a forward pass', async (t) => {
  // Were the U-Net on the page's thread, every step would block it for one forward pass, which
  // is most of a step: the worker computes step k+1's ε̂ while the page draws step k, so a step
  // takes max(forward, drawing), and the drawing is a few ms against ~100 ms for the forward of
  // 16 digits. So no long task (the Long Tasks API reports those over 50 ms) may last half a
  // step, the mean step timed here from the click to the last step. The bound is relative, not
  // 50 ms: a long task's duration is wall time, and on a busy 2-core machine the page's thread
  // is sometimes descheduled for tens of ms in the middle of a few ms of drawing.
  // On a 2-core machine the page starts two workers, which keep both cores busy beside it.
  const { page, problems } = await open({ width: 1280, height: 900 }, 'sampler=ddim&steps=8&eta=0&seed=0');
  assert.match(await page.textContent('.badge'), /CPU \(burn flex, relaxed SIMD, in (a|\d+) Web Workers?\)/);
  await page.evaluate(() => {
    window.longTasks = [];
    new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((e) => Math.round(e.duration)))).observe({
      type: 'longtask',
    });
  });
  const started = Date.now();
  await page.click('button.generate');
  await waitForSteps(page, 8);
  const stepMs = (Date.now() - started) / 8;
  const x0 = await page.$eval('.reverse figure:nth-of-type(2) canvas', (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) lit += d[i] > 128 ? 1 : 0;
    return lit / (d.length / 4);
  });
  assert.ok(x0 > 0.02 && x0 < 0.4, `x̂_0 from the worker's ε̂ looks like strokes on black (${(100 * x0).toFixed(1)} % lit)`);
  const long = await page.evaluate(() => window.longTasks);
  t.diagnostic(`mean step ${stepMs.toFixed(0)} ms; long tasks on the page's thread: [${long.join(', ')}] ms`);
  const blocking = long.filter((ms) => ms >= stepMs / 2);
  assert.deepEqual(blocking, [], `long tasks (ms) of half a step (${stepMs.toFixed(0)} ms) or more: ${long.join(', ')}`);
  assert.deepEqual(problems, []);
  await page.close();
});

test('with more cores the page shares each step among workers, and the chain is the same to the bit', async () => {
  // A machine with 3 logical processors gets 2 workers (one per core but the page's), one with a
  // single logical processor one; the same link draws the same pictures, pixel for pixel.
  const pictures = async (cores) => {
    const { page, problems } = await open({ width: 1280, height: 900 }, 'sampler=ddim&steps=3&eta=0&seed=5', async (p) => {
      if (cores) await p.addInitScript((n) => Object.defineProperty(navigator, 'hardwareConcurrency', { get: () => n }), cores);
    });
    const badge = await page.textContent('.badge');
    await page.click('button.generate');
    await waitForSteps(page, 3);
    const pixels = await page.$$eval('.reverse figure canvas', (cs) => cs.map((c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).join(',')));
    assert.deepEqual(problems, []);
    await page.close();
    return { badge, pixels };
  };
  const one = await pictures(1);
  const two = await pictures(3);
  assert.match(one.badge, /in a Web Worker\)/);
  assert.match(two.badge, /in 2 Web Workers\)/);
  assert.ok(one.pixels.length >= 2);
  assert.ok(one.pixels.every((p, i) => p === two.pixels[i]), 'x_t and x̂_0 differ between one worker and two');
});

test('a worker the browser ends is replaced, and the chain goes on the same to the bit', async (t) => {
  // Two workers (3 logical processors). A first chain shows the pool how long a step takes; then
  // one worker is ended from inside, as the browser ends a worker that crashed (no event reaches
  // the page, its requests are never answered). The same chain run again must not hang: the pool
  // takes the silent worker for lost, starts another, asks it the same images, and the pictures
  // are the first chain's, pixel for pixel.
  const { page, problems } = await open({ width: 1280, height: 900 }, 'sampler=ddim&steps=3&eta=0&seed=5', async (p) => {
    await p.addInitScript(() => Object.defineProperty(navigator, 'hardwareConcurrency', { get: () => 3 }));
  });
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  assert.match(await page.textContent('.badge'), /in 2 Web Workers\)/);
  const pixels = () => page.$$eval('.reverse figure canvas', (cs) => cs.map((c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).join(',')));
  await page.click('button.generate');
  await waitForSteps(page, 3);
  const before = await pixels();
  const workers = page.workers();
  assert.equal(workers.length, 2, 'two workers');
  await workers[1].evaluate(() => self.close());
  const started = Date.now();
  await page.click('button.generate');
  await page.waitForFunction(() => !document.querySelector('.reverse .status')?.textContent.includes('step 3 of 3'));
  await waitForSteps(page, 3);
  const after = await pixels();
  assert.ok(warnings.some((w) => /worker 1 of the model was lost \(no answer in/.test(w)), `the loss was noticed: ${warnings.join(' | ')}`);
  assert.equal(page.workers().length, 2, 'the lost worker was replaced');
  assert.ok(before.length >= 2);
  assert.ok(before.every((p, i) => p === after[i]), 'x_t and x̂_0 differ after a worker was replaced');
  assert.deepEqual(problems, []);
  t.diagnostic(`the chain with a lost worker took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await page.close();
});

test('at 360 px wide nothing overflows sideways', async () => {
  const { page, problems } = await open({ width: 360, height: 780 });
  // With the comparison and the walk opened too.
  await page.click('.compare summary');
  await page.click('.walk summary');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  await page.screenshot({ path: `${SHOTS}/explorer-360.png`, fullPage: true });
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);
  assert.deepEqual(problems, []);
  await page.close();
});

test('the sampler controls show what the URL says and keep what the user set', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 }, 'sampler=ddpm&variance=beta&seed=0');
  const samplerSelect = page.locator('.reverse select').first();
  assert.equal(await samplerSelect.inputValue(), 'ddpm');
  assert.equal(await page.locator('.reverse select').nth(1).inputValue(), 'beta');
  // DDIM with 7 steps and η = 0.5, over to DDPM and back: both settings survive.
  await samplerSelect.selectOption('ddim');
  await page.fill('.reverse input.steps', '7');
  await page.dispatchEvent('.reverse input.steps', 'change');
  await page.fill('.reverse input.eta', '0.5');
  await page.dispatchEvent('.reverse input.eta', 'change');
  await samplerSelect.selectOption('ddpm');
  assert.equal(await page.locator('.reverse select').nth(1).inputValue(), 'beta');
  await samplerSelect.selectOption('ddim');
  assert.equal(await page.inputValue('.reverse input.steps'), '7');
  assert.equal(await page.inputValue('.reverse input.eta'), '0.5');
  // The URL keeps the backend it was opened with, beside the view.
  assert.match(page.url(), /sampler=ddim7-eta0\.5&backend=cpu/);
  assert.deepEqual(problems, []);
  await page.close();
});

test('a stroke on the draw pad becomes x_0', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 });
  await page.click('text=Clear (draw your own)');
  const ink = () =>
    page.$eval('canvas.drawable', (c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      for (let i = 0; i < d.length; i += 4) lit += d[i] > 0 ? 1 : 0;
      return lit;
    });
  assert.equal(await ink(), 0, 'cleared to black');
  const box = await page.locator('canvas.drawable').boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 8 });
  await page.mouse.up();
  assert.ok((await ink()) > 20, 'the stroke lit pixels');
  assert.deepEqual(problems, []);
  await page.close();
});

test('two samplers side by side, the latent walk, play and PNG downloads', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 });
  // Side by side: DDIM-3 (η = 0) against DDIM-6 (η = 1) from one x_T. Lockstep visits the union of
  // their timesteps: 999, 832, 666, 499, 332, 166 — six rounds.
  await page.click('.compare summary');
  const sides = page.locator('.compare .side');
  await setNumber(page, '.compare .side >> nth=0 >> input.steps', 3);
  await sides.nth(1).locator('select.sampler').selectOption('ddim');
  await setNumber(page, '.compare .side >> nth=1 >> input.steps', 6);
  await setNumber(page, '.compare .side >> nth=1 >> input.eta', 1);
  assert.match(await sides.nth(0).locator('h3').textContent(), /DDIM-3, η = 0/);
  assert.match(await sides.nth(1).locator('h3').textContent(), /DDIM-6, η = 1/);
  await page.click('button.run-compare');
  await waitForStatus(page, '.compare', 'round 6 of 6');
  assert.match(await page.textContent('.compare .difference'), /after t = 166: RMS difference of x̂_0 \d\.\d{3}, of x_t \d\.\d{3}/);
  assert.ok((await page.getAttribute('.difference-plot polyline', 'points')).split(' ').length >= 6, 'a point per round');
  await page.locator('.compare').screenshot({ path: `${SHOTS}/compare.png` });

  // The latent walk: ten digits, DDIM-20.
  await page.click('.walk summary');
  await page.click('button.run-walk');
  await waitForStatus(page, '.walk', 'step 20 of 20');
  assert.equal(await page.$eval('canvas.strip', (c) => c.width), 10 * 29 + 1);
  await page.locator('.walk').screenshot({ path: `${SHOTS}/latent-walk.png` });
  const walk = page.waitForEvent('download');
  await page.click('.walk button.download');
  assert.equal((await walk).suggestedFilename(), 'ddpm-latent-walk.png');

  // Play moves the forward slider by itself; pause stops it.
  await setSlider(page, 0);
  await page.click('.forward button.play');
  await page.waitForFunction(() => Number(document.querySelector('#t-slider').value) > 50, null, { timeout: 20_000 });
  await page.click('.forward button.play');
  const paused = await page.inputValue('#t-slider');
  await page.waitForTimeout(300);
  assert.equal(await page.inputValue('#t-slider'), paused, 'paused');

  // A chain, then its samples and the chain figure as PNG files (PNG signature checked).
  await page.click('button.generate');
  await waitForSteps(page, 3);
  for (const [label, name] of [['Save samples (PNG)', 'ddpm-samples.png'], ['Save chain (PNG)', 'ddpm-chain.png']]) {
    const download = page.waitForEvent('download');
    await page.click(`text=${label}`);
    const file = await download;
    assert.equal(file.suggestedFilename(), name);
    const bytes = await readFile(await file.path());
    assert.deepEqual([...bytes.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  }
  // The URL keeps the replay position; a link with it regenerates the chain and shows that step.
  assert.match(page.url(), /replay=3/);
  assert.deepEqual(problems, []);
  await page.close();

  const shared = await open({ width: 1280, height: 900 }, 'sampler=ddim&steps=3&eta=0&seed=0&replay=1');
  await waitForSteps(shared.page, 3);
  await shared.page.waitForFunction(() => document.querySelector('input.scrubber').value === '1');
  assert.match(shared.page.url(), /replay=1/);
  assert.deepEqual(shared.problems, []);
  await shared.page.close();
});

test('a cosine noise level starts SDEdit at the same ᾱ on the model\'s linear schedule', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 });
  await page.selectOption('.forward select', 'cosine');
  await setSlider(page, 500);
  // ᾱ of the cosine schedule at t = 500 is nearest the linear ᾱ at t = 260 (computed in the unit tests).
  assert.match(await page.textContent('button.sdedit'), /cosine t = 500 \(the model's linear t = 26\d\)/);
  await page.click('button.sdedit');
  await waitForStatus(page, '.reverse', 'step 1 of 1');
  assert.match(await page.textContent('.math'), /t = 26\d → x_0/);
  assert.deepEqual(problems, []);
  await page.close();
});

test('every loading failure is a message in the page, with a retry where one can help', async () => {
  const weights = await readFile('dist/assets/model.bpk');
  const config = JSON.parse(await readFile('dist/assets/config.json', 'utf8'));
  /** Opens the page with model.bpk or config.json answered by `serve`, and returns the message. */
  async function failing(file, serve) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.route(`**/assets/${file}`, serve);
    await page.goto(`${server.origin}/?backend=cpu`);
    await page.waitForSelector('.error', { timeout: 120_000 });
    return page;
  }
  // A failed fetch: the message and a retry button; the retry loads the page.
  let aborted = 0;
  const page = await failing('model.bpk', (route) => (aborted++ === 0 ? route.abort() : route.continue()));
  assert.match(await page.textContent('.error'), /could not fetch assets\/model\.bpk/);
  await page.click('button.retry');
  await page.waitForSelector('#t-slider', { timeout: 120_000 });
  assert.equal(aborted, 2);
  await page.close();
  // A truncated file, weights holding NaN, and a config.json that does not match the weights: a
  // message each, and no retry button (trying again would fetch the same bytes).
  const nan = Buffer.from(weights);
  nan.writeUInt16LE(0x7e00, nan.length - 2); // the last value of the last tensor: an f16 NaN
  const cases = [
    ['model.bpk', { body: weights.subarray(0, weights.length >> 1) }, /do not fit|corrupt|truncated/],
    ['model.bpk', { body: nan }, /NaN or infinite/],
    ['config.json', { body: JSON.stringify({ ...config, unet: { ...config.unet, base_channels: 16 } }) }, /do not fit/],
  ];
  for (const [file, answer, expected] of cases) {
    const page = await failing(file, (route) => route.fulfill({ status: 200, ...answer }));
    assert.match(await page.textContent('.error'), expected);
    assert.equal(await page.$('button.retry'), null);
    await page.close();
  }
  // The app's own wasm missing: the progress line becomes a message instead of spinning on.
  const noApp = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await noApp.route('**/*_bg.wasm', (route) => route.fulfill({ status: 404, body: 'gone' }));
  await noApp.goto(`${server.origin}/`);
  await noApp.waitForSelector('#ddpm-app .error', { timeout: 60_000 });
  assert.match(await noApp.textContent('#ddpm-app .error'), /The app could not be loaded \(.+\)\. Reload the page to try again\./);
  await noApp.close();
});

test('a link with settings it cannot take says which and why', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 }, 'steps=-5&eta=abc&t=5000');
  const notice = await page.textContent('.notice');
  assert.match(notice, /steps=-5: not a number of steps/);
  assert.match(notice, /eta=abc: not an η between 0 and 1/);
  assert.match(notice, /t = 5000 is past this model's last timestep/);
  assert.deepEqual(problems, []);
  await page.close();
});

test('a conditional model: a class picked and guided, in the URL, without errors', async () => {
  // The shipped conditional digits model (the page's first), from a link saved before it was
  // renamed from digits-by-class: it opens under its id now, without a notice.
  const { page, problems } = await open({ width: 1280, height: 900 }, 'model=digits-by-class&sampler=ddim&steps=3&eta=0&seed=0&class=7&w=2');
  assert.equal(await page.locator('.notice').count(), 0);
  // The link's class and w are on the controls, and the guidance equation names the class.
  assert.equal(await page.$eval('.class-picker', (el) => el.value), '7');
  assert.equal(await page.$eval('.guidance-slider', (el) => el.value), '2');
  assert.match(await page.textContent('.guidance'), /“7”/);
  // A guided chain runs (both passes as one batch) and the URL keeps the choice.
  await page.click('button.generate');
  await waitForSteps(page, 3);
  assert.match(page.url(), /class=7&w=2/);
  assert.doesNotMatch(page.url(), /model=/);
  // "any" turns guidance off: the slider is disabled and the URL drops the class.
  await page.selectOption('.class-picker', 'any');
  assert.equal(await page.$eval('.guidance-slider', (el) => el.disabled), true);
  await page.waitForFunction(() => !location.search.includes('class='));
  // Side by side, one sampler from one x_T at w = 0 and w = 3: the preset picks the first class
  // when none is, and the two chains' x̂_0 end apart.
  await page.click('.compare summary');
  await setNumber(page, '.compare .side >> nth=0 >> input.steps', 3);
  await page.click('button.guidance-preset');
  assert.equal(await page.$eval('.class-picker', (el) => el.value), '0');
  const sides = page.locator('.compare .side');
  assert.match(await sides.nth(0).locator('h3').textContent(), /DDIM-3, η = 0, w = 0$/);
  assert.match(await sides.nth(1).locator('h3').textContent(), /DDIM-3, η = 0, w = 3$/);
  await page.click('button.run-compare');
  await waitForStatus(page, '.compare', 'round 3 of 3');
  const [, x0] = (await page.textContent('.compare .difference')).match(/RMS difference of x̂_0 (\d\.\d{3})/);
  assert.ok(Number(x0) > 0.01, `w = 0 and w = 3 drew different digits (RMS ${x0})`);
  await page.locator('.compare').screenshot({ path: `${SHOTS}/compare-guidance.png` });
  assert.deepEqual(problems, []);
  await page.close();
});

test('a second model is fetched only when picked, with a progress line, and the link names it', async () => {
  // The page's list with a second model of the other kind than the shipped one (conditional or not),
  // so the class picker comes or goes with the pick.
  const shippedIsConditional = JSON.parse(await readFile('assets/config.json', 'utf8')).unet.num_classes != null;
  const [dir, name] = shippedIsConditional
    ? ['training/mnist-msnr-decay/export-f16', 'Digits, unconditional']
    : ['training/digits-cond/export-f16', 'Digits by class'];
  const weights = await readFile(`${dir}/model.bpk`);
  const catalogue = {
    models: [
      { id: 'digits', name: 'Digits (MNIST)', dir: '', weights_bytes: (await readFile('assets/model.bpk')).length, noun: { one: 'digit', many: 'digits' } },
      { id: 'other', name, dir: 'other', weights_bytes: weights.length, noun: { one: 'sketch', many: 'sketches' } },
    ],
  };
  const requested = [];
  const twoModels = async (page) => {
    page.on('request', (r) => requested.push(new URL(r.url()).pathname));
    await page.route('**/assets/models.json', (route) => route.fulfill({ body: JSON.stringify(catalogue) }));
    await page.route('**/assets/other/config.json', async (route) => route.fulfill({ body: await readFile(`${dir}/config.json`) }));
    // Held back a moment, so the progress line can be seen before the bytes arrive.
    await page.route('**/assets/other/model.bpk', async (route) => {
      await new Promise((done) => setTimeout(done, 1500));
      await route.fulfill({ body: weights });
    });
    for (const f of ['digits-images-idx3-ubyte', 'digits-labels-idx1-ubyte']) {
      await page.route(`**/assets/other/${f}`, async (route) => route.fulfill({ body: await readFile(`assets/${f}`) }));
    }
  };
  const classPicker = (page) => page.$('.class-picker').then((el) => el !== null);
  const { page, problems } = await open({ width: 1280, height: 900 }, 'sampler=ddim3&seed=0', twoModels);
  assert.deepEqual(await page.$$eval('.model-picker option', (os) => os.map((o) => o.textContent)), ['Digits (MNIST)', name]);
  assert.equal(await classPicker(page), shippedIsConditional);
  assert.match(await page.textContent('.walk .explain'), /into one digit, always the same/);
  assert.ok(!requested.some((p) => p.startsWith('/assets/other/')), 'nothing of the second model before it is picked');
  // Picking it fetches it (the progress line names it) and the page shows its controls.
  await page.selectOption('.model-picker', 'other');
  await page.waitForFunction((n) => document.querySelector('.model-loading').textContent.includes(`Fetching the ${n} model's weights: `), name);
  assert.match(await page.textContent('.model-loading'), /: \d\.\d of 2\.4 MB$/);
  await page.waitForFunction((want) => (document.querySelector('.class-picker') !== null) === want, !shippedIsConditional, { timeout: 120_000 });
  assert.ok(requested.includes('/assets/other/model.bpk'));
  assert.match(page.url(), /model=other&/);
  assert.equal(await page.$eval('.model-loading', (el) => el.hidden), true, 'the progress line is gone once loaded');
  // The page's sentences name what the picked model draws.
  assert.match(await page.textContent('.walk .explain'), /into one sketch, always the same.*10 sketches, DDIM/s);
  if (!shippedIsConditional) await page.selectOption('.class-picker', '3');
  await page.click('button.generate');
  await waitForSteps(page, 3);
  // A link with the model opens it; one with a model the page lacks says so and shows the first.
  const shared = await open({ width: 1280, height: 900 }, 'model=other&sampler=ddim3', twoModels);
  assert.equal(await shared.page.$eval('.model-picker', (el) => el.value), 'other');
  await shared.page.close();
  const unknown = await open({ width: 1280, height: 900 }, 'model=cifar', twoModels);
  assert.match(await unknown.page.textContent('.notice'), /model=cifar is not one of this page's models \(digits, other\): showing Digits \(MNIST\)/);
  await unknown.page.close();
  assert.deepEqual(problems, []);
  await page.close();
});

test('every model the page ships opens from its link, shows its own images and runs a chain', async () => {
  const { models } = JSON.parse(await readFile('assets/models.json', 'utf8'));
  for (const m of models) {
    const config = JSON.parse(await readFile(`assets/${m.dir ? `${m.dir}/` : ''}config.json`, 'utf8'));
    const { page, problems } = await open({ width: 1280, height: 900 }, `model=${m.id}&sampler=ddim3&seed=0`);
    if (models.length > 1) assert.equal(await page.$eval('.model-picker', (el) => el.value), m.id);
    // The forward panel's strip: two real images per class of this model's dataset.
    assert.equal(await page.$$eval('.digit-strip .thumb', (ts) => ts.length), 20, m.id);
    if (m.noun) assert.match(await page.textContent('.walk .explain'), new RegExp(`into one ${m.noun.one}, always the same`));
    // A conditional model offers its classes by name, and a guided chain runs.
    const conditional = config.unet.num_classes != null;
    assert.equal((await page.$('.class-picker')) !== null, conditional, m.id);
    if (conditional) {
      const names = await page.$$eval('.class-picker option', (os) => os.map((o) => o.textContent));
      assert.equal(names.length, config.unet.num_classes + 1, `${m.id}: any, then the classes`);
      await page.selectOption('.class-picker', '1');
    }
    await page.click('button.generate');
    await waitForSteps(page, 3);
    await page.locator('.reverse').screenshot({ path: `${SHOTS}/reverse-${m.id}.png` });
    assert.deepEqual(problems, [], m.id);
    await page.close();
  }
});

test('a colour model draws in colour at its own size: examples, x_t and the chain', async () => {
  // A tiny RGB model (16 × 16, two classes, `tests/fixtures/rgb-tiny`: `ddpm train` on a folder of
  // red and blue squares, then `ddpm export --examples` from that folder) offered beside the digits.
  const dir = 'tests/fixtures/rgb-tiny';
  const weights = await readFile(`${dir}/model.bpk`);
  const catalogue = {
    models: [
      { id: 'digits', name: 'Digits (MNIST)', dir: '', weights_bytes: (await readFile('assets/model.bpk')).length },
      { id: 'squares', name: 'Squares (RGB)', dir: 'squares', weights_bytes: weights.length, noun: { one: 'square', many: 'squares' } },
    ],
  };
  const colourModel = async (page) => {
    await page.route('**/assets/models.json', (route) => route.fulfill({ body: JSON.stringify(catalogue) }));
    for (const f of ['config.json', 'model.bpk', 'digits-images-idx3-ubyte', 'digits-labels-idx1-ubyte']) {
      await page.route(`**/assets/squares/${f}`, async (route) => route.fulfill({ body: await readFile(`${dir}/${f}`) }));
    }
  };
  const { page, problems } = await open({ width: 1280, height: 900 }, 'model=squares&sampler=ddim3&seed=0', colourModel);
  /** The canvas's size and whether any of its pixels has unequal red, green and blue. */
  const colourOf = (selector) =>
    page.$eval(selector, (c) => {
      const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
      let coloured = false;
      for (let i = 0; i < data.length; i += 4) coloured ||= data[i] !== data[i + 1] || data[i + 1] !== data[i + 2];
      return { width: c.width, height: c.height, coloured };
    });
  // Its examples (two per class) are its own 16 × 16 colour pictures, and x_t is one too.
  assert.equal(await page.$$eval('.digit-strip .thumb', (ts) => ts.length), 4);
  assert.deepEqual(await colourOf('.digit-strip .thumb-canvas'), { width: 16, height: 16, coloured: true });
  assert.deepEqual(await colourOf('canvas.forward-xt'), { width: 16, height: 16, coloured: true });
  assert.deepEqual((await page.$$eval('.class-picker option', (os) => os.map((o) => o.textContent))).slice(1), ['blues', 'reds']);
  // A chain of its 16 samples: a 4 × 4 grid of 16 px pictures with 1 px borders, in colour.
  await page.click('button.generate');
  await waitForSteps(page, 3);
  assert.deepEqual(await colourOf('.reverse canvas.grid'), { width: 4 * 17 + 1, height: 4 * 17 + 1, coloured: true });
  await page.locator('.reverse').screenshot({ path: `${SHOTS}/reverse-rgb.png` });
  assert.deepEqual(problems, []);
  await page.close();
});
