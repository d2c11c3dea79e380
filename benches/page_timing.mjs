// The browser explorer's reverse step, timed as a person meets it: serve dist/ (build it first with
// `trunk build --release`), open the page in Debian's headless Chromium, generate a DDIM chain of
// 16 digits twice and report the milliseconds per step (U-Net, update, read-back and drawing) for
// each backend asked for: frame to frame as the pictures arrive, and on average from the click, for
// the chain after the first (the steady state, as criterion's native figures are) and the first.
// SwiftShader (headless Chromium's WebGPU without a GPU) is CPU emulation, and the output says so
// from the adapter the page reports.
//
// It also reports how long the page's own thread is busy a step (Chromium's TaskDuration).
//
// `--workers 1,2,4` times the CPU backend with each number of Web Workers (the page starts one per
// logical processor but its own, two on two; the bench tells it it has n + 1, or 1 for one worker),
// for the scaling curve (each N's step against one worker's ÷ N, when 1 is among them).
// `--threads` adds, for the steady chain, the CPU time a step of each of Chromium's threads (the
// workers, the page's thread, the compositor…: where the cores go; Linux only, from /proc).
// `--wasm simd128,relaxed-simd` times the CPU backend on each of the page's two builds (the page
// picks the second where the browser has relaxed SIMD: scripts/post_build.py), alternated.
// `--native` times the native forward of the same 16 digits on one thread (criterion, short
// settings) before the first run and after each, and gives each CPU run's step as a ratio to the
// mean of the native figures on either side of it: on a VM whose speed drifts from one minute to
// the next, the two sides of the ratio are then measured within a minute of each other.
//
//   node benches/page_timing.mjs [--backends cpu,webgpu] [--steps 10] [--workers 1,2,4] [--wasm simd128,relaxed-simd] [--threads] [--native] [--dist dist]
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { launchChromium, serveDist } from '../tests/e2e/browser.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]?.startsWith('--') ? '' : all[i + 1]]] : pairs), []),
);

/** CPU ticks (1/100 s) so far of every thread of Chromium's processes, by "process type/thread name". */
function chromiumThreadTicks() {
  const ticks = new Map();
  // A process or thread may end between the listing and the read.
  const attempt = (f, otherwise) => {
    try {
      return f();
    } catch {
      return otherwise;
    }
  };
  const read = (path) => attempt(() => readFileSync(path, 'utf8'), undefined);
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const command = read(`/proc/${pid}/cmdline`);
    if (!command?.includes('chromium')) continue;
    const type = command.match(/--type=([\w-]+)/)?.[1] ?? 'browser';
    for (const tid of attempt(() => readdirSync(`/proc/${pid}/task`), [])) {
      const stat = read(`/proc/${pid}/task/${tid}/stat`);
      if (!stat) continue;
      const close = stat.lastIndexOf(')');
      const name = stat.slice(stat.indexOf('(') + 1, close).replace(/\d+$/, '');
      const [utime, stime] = stat.slice(close + 2).split(' ').slice(11, 13).map(Number);
      const key = `${type}/${name}`;
      ticks.set(key, (ticks.get(key) ?? 0) + utime + stime);
    }
  }
  return ticks;
}
/** The native U-Net forward of 16 digits on one thread: criterion's estimate, in ms. */
function nativeForward() {
  const bench = ['bench', '--features', 'native', '--bench', 'unet', '--', 'unet_forward/batch_16'];
  const short = ['--warm-up-time', '2', '--measurement-time', '8', '--sample-size', '10'];
  const out = execFileSync('cargo', [...bench, ...short], {
    env: { ...process.env, RAYON_NUM_THREADS: '1' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const estimate = out.match(/unet_forward\/batch_16\s+time:\s+\[\S+ \S+ (\S+) (ms|s)/);
  if (!estimate) throw new Error(`no estimate in criterion's output:\n${out}`);
  return Number(estimate[1]) * (estimate[2] === 's' ? 1000 : 1);
}

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

const native = 'native' in args ? [nativeForward()] : [];
if (native.length) console.log(`native forward of 16 digits, one thread: ${native[0].toFixed(1)} ms`);

// The next chain's step of each CPU run with a forced number of workers, for the scaling line.
const steadyByWorkers = new Map();

const { origin, close } = await serveDist(dist);
const browser = await launchChromium();
try {
  for (const { backend, n, wasm } of runs) {
    const page = await browser.newPage();
    if (n) await page.addInitScript((cores) => Object.defineProperty(navigator, 'hardwareConcurrency', { get: () => cores }), n === 1 ? 1 : n + 1);
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
    const chain = async () => {
      await page.evaluate(() => window.stepTimes.clear());
      const busyBefore = await busy();
      const started = Date.now();
      await page.click('button.generate');
      await page.waitForFunction((n) => window.stepTimes.has(String(n)), steps, { timeout: 1_800_000, polling: 200 });
      const perStep = (Date.now() - started) / steps;
      const pageThread = (((await busy()) - busyBefore) * 1000) / steps;
      // Frame to frame, from step 2 on (the first step also reads back x_T).
      const times = await page.evaluate(() => [...window.stepTimes.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t));
      const gaps = times.slice(2).map((t, i) => t - times[i + 1]).sort((a, b) => a - b);
      const median = gaps.length ? gaps[Math.floor(gaps.length / 2)] : NaN;
      return { median, text: `${median.toFixed(0)} ms frame to frame (median from step 2), ${perStep.toFixed(0)} ms on average from the click, the page's thread busy ${pageThread.toFixed(0)} ms a step` };
    };
    // The first chain after the page loads runs partly on V8's baseline code while its optimising
    // compiler works through the kernels in the background; the second runs as a page that has
    // been used does (as criterion's native figure is taken after its warm-up).
    const first = await chain();
    const before = 'threads' in args ? chromiumThreadTicks() : undefined;
    const second = await chain();
    const threads = before
      ? [...chromiumThreadTicks()]
          .map(([key, t]) => [key, ((t - (before.get(key) ?? 0)) * 10) / steps])
          .filter(([, ms]) => ms >= 1)
          .sort((a, b) => b[1] - a[1])
      : [];
    const emulated = /swiftshader|llvmpipe|lavapipe|warp|cpu/i.test(badge ?? '') ? ' (CPU: not a GPU figure)' : '';
    console.log(`${backend}${n ? ` (${n} worker${n > 1 ? 's' : ''})` : ''} [${module}]: ready in ${ready.toFixed(1)} s; reverse step of 16 digits over ${steps} DDIM steps — the next chain: ${second.text}; the first chain: ${first.text}; badge: "${badge}"${emulated}`);
    if (threads.length) {
      const total = threads.reduce((sum, [, ms]) => sum + ms, 0);
      console.log(`  CPU a step of the next chain, ${total.toFixed(0)} ms in all: ${threads.map(([key, ms]) => `${key} ${ms.toFixed(0)}`).join(', ')}`);
    }
    if (errors.length) console.log(`  page errors: ${errors.join('; ')}`);
    await page.close();
    if (backend === 'cpu' && n) steadyByWorkers.set(n, second.median);
    if (native.length) {
      const [before, after] = [native.at(-1), nativeForward()];
      native.push(after);
      const ratio = backend === 'cpu' ? `; the next chain's step ÷ their mean: ${(second.median / ((before + after) / 2)).toFixed(2)}×` : '';
      console.log(`  native forward of 16 digits, one thread, before and after: ${before.toFixed(1)} and ${after.toFixed(1)} ms${ratio}`);
    }
  }
  // N workers against one worker's step ÷ N (1.0× would be perfect scaling).
  const one = steadyByWorkers.get(1);
  const scaling = [...steadyByWorkers].filter(([n]) => n > 1 && one);
  if (scaling.length) console.log(`scaling, the next chain's step against one worker's ÷ N: ${scaling.map(([n, ms]) => `${n} workers ${(ms / (one / n)).toFixed(2)}×`).join(', ')}`);
} finally {
  await browser.close();
  close();
}
