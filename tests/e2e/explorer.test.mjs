// The explorer as a person meets it, end to end, in Debian's headless Chromium: the built page
// (dist/, from `trunk build --release`) loads from its own origin only, the timestep slider moves,
// a few DDIM steps run, SDEdit runs from the slider's t, nothing logs an error, and at 360 px
// nothing overflows sideways. Screenshots go to target/e2e/ (the README's come from there).
//
//   node --test tests/e2e/
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
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
async function open(viewport, query = 'sampler=ddim&steps=3&eta=0&seed=0') {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`page error: ${e}`));
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== server.origin) problems.push(`off-origin request: ${r.url()}`);
  });
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

async function waitForSteps(page, n) {
  await page.waitForFunction((k) => document.querySelector('.reverse .status')?.textContent.includes(`step ${k} of ${k}`), n, {
    timeout: 300_000,
    polling: 100,
  });
}

test('load, slide, generate, SDEdit: from its own origin, without errors', async () => {
  const { page, problems } = await open({ width: 1280, height: 900 });
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
  assert.match(await page.textContent('.math'), /600/);
  await page.screenshot({ path: `${SHOTS}/explorer.png`, fullPage: true });
  assert.deepEqual(problems, []);
  await page.close();
});

test('at 360 px wide nothing overflows sideways', async () => {
  const { page, problems } = await open({ width: 360, height: 780 });
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
  await page.fill('input.steps', '7');
  await page.dispatchEvent('input.steps', 'change');
  await page.fill('input.eta', '0.5');
  await page.dispatchEvent('input.eta', 'change');
  await samplerSelect.selectOption('ddpm');
  assert.equal(await page.locator('.reverse select').nth(1).inputValue(), 'beta');
  await samplerSelect.selectOption('ddim');
  assert.equal(await page.inputValue('input.steps'), '7');
  assert.equal(await page.inputValue('input.eta'), '0.5');
  // The URL keeps the backend it was opened with, beside the view.
  assert.match(page.url(), /sampler=ddim&steps=7&eta=0\.5&backend=cpu/);
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
