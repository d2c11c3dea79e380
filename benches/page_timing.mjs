// The browser explorer's reverse step, timed as a person meets it: serve dist/ (build it first with
// `trunk build --release`), open the page in Debian's headless Chromium, generate a DDIM chain of
// 16 digits and report the milliseconds per step (U-Net, update, read-back and drawing) for each
// backend asked for: frame to frame as the pictures arrive, and on average from the click.
// SwiftShader (headless Chromium's WebGPU without a GPU) is CPU emulation, and the output says so
// from the adapter the page reports.
//
// It also reports how long the page's own thread is busy a step (Chromium's TaskDuration).
//
// `--workers 1,2,4` times the CPU backend with each number of Web Workers (the page starts one per
// logical processor but its own; the bench tells it it has n + 1), for the scaling curve.
// `--wasm simd128,relaxed-simd` times the CPU backend on each of the page's two builds (the page
// picks the second where the browser has relaxed SIMD: scripts/post_build.py), alternated.
//
//   node benches/page_timing.mjs [--backends cpu,webgpu] [--steps 10] [--workers 1,2,4] [--wasm simd128,relaxed-simd] [--dist dist]
import { launchChromium, serveDist } from '../tests/e2e/browser.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const backends = (args.backends ?? 'cpu').split(',');
const steps = Number(args.steps ?? 10);
const dist = args.dist ?? 'dist';
// Each run: a backend, and for the CPU a number of workers (undefined: the machine's own).
const workers = args.workers ? args.workers.split(',').map(Number) : [undefined];
// ... and one of the page's two builds (undefined or relaxed-simd: the one the page picks, which is
// the relaxed-SIMD build in Chromium; only `?wasm=simd128` is a choice the page's URL takes).
const modules = args.wasm ? args.wasm.split(',') : [undefined];
const runs = backends.flatMap((backend) =>
  backend === 'cpu' ? workers.flatMap((n) => modules.map((wasm) => ({ backend, n, wasm }))) : [{ backend }],
);

const { origin, close } = await serveDist(dist);
const browser = await launchChromium();
try {
  for (const { backend, n, wasm } of runs) {
    const page = await browser.newPage();
    if (n) await page.addInitScript((cores) => Object.defineProperty(navigator, 'hardwareConcurrency', { get: () => cores }), n + 1);
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const loadStart = Date.now();
    await page.goto(`${origin}/?backend=${backend}&sampler=ddim&steps=${steps}&eta=0&seed=0${wasm === 'simd128' ? '&wasm=simd128' : ''}`);
    await page.waitForSelector('button.generate', { timeout: 120_000 });
    const ready = (Date.now() - loadStart) / 1000;
    const badge = (await page.textContent('.badge'))?.trim();
    const module = await page.evaluate(() => window.wasmModuleName);
    // When each step's frame reaches the page: the status line changes to "step k of n" as the
    // step's pictures are set, and a MutationObserver notes the time.
    await page.evaluate(() => {
      window.stepTimes = new Map();
      const panel = document.querySelector('.reverse');
      new MutationObserver(() => {
        const k = panel.querySelector('.status')?.textContent.match(/step (\d+) of/)?.[1];
        if (k !== undefined && !window.stepTimes.has(k)) window.stepTimes.set(k, performance.now());
      }).observe(panel, { childList: true, subtree: true, characterData: true });
    });
    // The page's own thread: its busy time over the chain (Chromium's TaskDuration, through the
    // DevTools protocol), which the workers share the cores with.
    const devtools = await page.context().newCDPSession(page);
    await devtools.send('Performance.enable');
    const busy = async () => (await devtools.send('Performance.getMetrics')).metrics.find((m) => m.name === 'TaskDuration').value;
    const busyBefore = await busy();
    const started = Date.now();
    await page.click('button.generate');
    await page.waitForFunction((n) => document.querySelector('.reverse .status')?.textContent.includes(`step ${n} of ${n}`), steps, { timeout: 1_800_000, polling: 200 });
    const perStep = (Date.now() - started) / steps;
    const pageThread = (((await busy()) - busyBefore) * 1000) / steps;
    const readout = (await page.textContent('.reverse .status')).match(/([\d.]+) ms\/step/)?.[1];
    // Frame to frame, from step 2 on (the first step also reads back x_T and warms the JIT up).
    const times = await page.evaluate(() => [...window.stepTimes.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t));
    const gaps = times.slice(2).map((t, i) => t - times[i + 1]).sort((a, b) => a - b);
    const median = gaps.length ? gaps[Math.floor(gaps.length / 2)].toFixed(0) : '?';
    const emulated = /swiftshader|llvmpipe|lavapipe|warp|cpu/i.test(badge ?? '') ? ' (CPU: not a GPU figure)' : '';
    console.log(`${backend}${n ? ` (${n} worker${n > 1 ? 's' : ''})` : ''} [${module}]: ready in ${ready.toFixed(1)} s; reverse step of 16 digits: ${median} ms frame to frame (median from step 2), ${perStep.toFixed(0)} ms on average over ${steps} DDIM steps from the click (last step's readout ${readout} ms; the page's thread busy ${pageThread.toFixed(0)} ms a step); badge: "${badge}"${emulated}`);
    if (errors.length) console.log(`  page errors: ${errors.join('; ')}`);
    await page.close();
  }
} finally {
  await browser.close();
  close();
}
