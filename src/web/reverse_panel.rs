//! The reverse process x_T → x_0: run a chain on the model's device, show x_t and x̂_0 side by
//! side as it goes, stop it, and replay any step afterwards.

use super::article::{DDIM_PAPER, DDPM_CODE, DDPM_PAPER, Equation, SDEDIT_PAPER, step_equation};
use super::canvas::{PictureCanvas, now_ms};
use super::chain_driver::{drive_chains, read_back, read_back_all};
use super::controls::{DownloadButton, PlayButton, SamplerControls};
use super::engine::Engine;
use super::forward_panel::forward_noise;
use super::guidance_controls::GuidanceControls;
use super::state::PageState;
use crate::diffusion::sampler::{ChainStep, ReverseChain, StepCoefs};
use crate::image::{ImageShape, Picture};
use crate::rng::NoiseRng;
use burn::tensor::{Tensor, TensorData};
use leptos::prelude::*;
use send_wrapper::SendWrapper;
use std::rc::Rc;

/// Images per chain.
pub const BATCH: usize = 16;

/// One recorded step of the chain, as pictures.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The step's coefficients (`None` for x_T).
    pub coefs: Option<StepCoefs>,
    /// Grid of x_t.
    pub x_t: Picture,
    /// Grid of x̂_0 (black for x_T).
    pub pred_x0: Picture,
    /// Grid of the model's ε̂, divided by 3 so ±3σ spans black to white (grey for x_T).
    pub eps: Picture,
}

/// Columns and padding of the sample grids.
const GRID_COLUMNS: usize = 4;
const GRID_PAD: usize = 1;

fn grid(image: ImageShape, pixels: &[f32]) -> Picture {
    image.grid(pixels, GRID_COLUMNS, GRID_PAD)
}

/// The random stream of SDEdit's noise for all but the first image (see [`NoiseRng::stream_seed`]).
const SDEDIT_NOISE_STREAM: u64 = 2;

/// What starts a chain.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    /// x_T ~ N(0, I).
    Noise,
    /// x_0 noised to the slider's t (SDEdit).
    FromX0,
}

/// The reverse-process panel.
#[component]
pub fn ReversePanel(
    /// The model.
    engine: SendWrapper<Rc<Engine>>,
) -> impl IntoView {
    let state = PageState::expect();
    let PageState {
        sampler,
        seed,
        t,
        step,
        schedule,
        replay,
        busy,
        image,
        ..
    } = state;
    let chain_view = ChainView::new();
    let ChainView {
        stop,
        progress,
        step_ms,
        frames,
        shown,
    } = chain_view;
    let running = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let timesteps = engine.config.timesteps;
    let engine_class_names = engine.config.class_names();
    let one = engine.model.noun.one.clone();
    let model_schedule = engine
        .config
        .noise_schedule()
        .expect("config.json was validated when loaded");
    let model_kind = model_schedule.kind;

    // `then_show`: the frame to show once the chain is done (a shared link's replay position).
    let run = move |start: Start, then_show: Option<usize>| {
        let engine: Rc<Engine> = Rc::clone(&engine);
        state.run_exclusive(error, async move {
            running.set(true);
            stop.set(false);
            let result = run_chain(&engine, start, state, chain_view).await;
            if let Some(k) = then_show {
                let k = k.min(frames.with_untracked(|f| f.len().saturating_sub(1)));
                shown.set(k);
                step.set(frames.with_untracked(|f| f.get(k).and_then(|f| f.coefs)));
            }
            running.set(false);
            result
        });
    };
    // A link with `&replay=k` regenerates its chain and shows step k.
    if let Some(k) = replay.get_untracked() {
        run(Start::Noise, Some(k));
    }
    // The link follows the step on screen once the chain has stopped: a new URL at every step of a
    // running chain cost the page's thread ~7 ms a step (`history.replaceState`), beside the workers.
    Effect::new(move |_| {
        if running.get() {
            return;
        }
        let has_frames = frames.with(|f| !f.is_empty());
        replay.set(has_frames.then(|| shown.get()));
    });
    let run_noise = run.clone();
    let current = move || frames.with(|f| f.get(shown.get()).cloned());
    let x_t_img = Signal::derive(move || current().map(|f| f.x_t));
    let x0_img = Signal::derive(move || current().map(|f| f.pred_x0));
    let eps_img = Signal::derive(move || current().map(|f| f.eps));
    // SDEdit noises x_0 to the model's own schedule at the noise level (ᾱ) the forward panel shows.
    let sdedit_t = {
        let model_schedule = model_schedule.clone();
        move || schedule.with(|s| model_schedule.nearest_t(s.alpha_bar[t.get().min(s.timesteps() - 1)]))
    };
    let sdedit_label = {
        let sdedit_t = sdedit_t.clone();
        move || {
            let shown_kind = schedule.with(|s| s.kind);
            if shown_kind == model_kind {
                format!("Start from x_0 at t = {}", t.get())
            } else {
                format!(
                    "Start from x_0 at {shown_kind} t = {} (the model's {model_kind} t = {})",
                    t.get(),
                    sdedit_t()
                )
            }
        }
    };
    let eta_text = move || {
        if running.get() {
            time_left(progress.get(), step_ms.get())
        } else {
            String::new()
        }
    };
    let last_frame = move || frames.with(|f| f.len().saturating_sub(1));
    let class_names = engine_class_names.clone();
    let step_equation = Signal::derive(move || step.get().map(|c| step_equation(&c)).unwrap_or_default());
    view! {
        <section class="reverse" aria-label="reverse process">
            <h2>"Reverse process x_T → x_0"</h2>
            <p class="explain">
                "The U-Net predicts the noise ε̂ in x_t; from it follow x̂_0 (eq. 4 solved for x_0) and a step to x_{t−1}. "
                <b>"DDPM"</b>" (Ho et al. Algorithm 2) visits all " {timesteps} " steps and adds fresh noise σ_t z with σ_t² = β̃_t (the true posterior's variance when x_0 is one point) or β_t (its upper bound). "
                <b>"DDIM"</b>" (Song et al. eq. 12) skips along a sub-sequence; η scales its noise, from 0 (deterministic: one x_T, one " {one} ") to 1 (DDPM's β̃). "
                <b>"SDEdit"</b>" (Meng et al.) starts from your x_0 noised to the slider's t instead of from pure noise: the less noise, the more of your drawing survives. "
                "The chain runs the model's " {model_kind.name()} " schedule, T = " {timesteps} "."
            </p>
            <div class="controls">
                <SamplerControls sampler=sampler timesteps=timesteps />
                <label>"seed "
                    <input type="number" min="0" class="seed" prop:value=move || seed.get().to_string()
                        on:change=move |ev| {
                            if let Ok(v) = event_target_value(&ev).parse::<u64>() {
                                seed.set(v)
                            }
                        } />
                </label>
                <button class="random-seed" title="a new random seed" disabled=move || busy.get()
                    on:click=move |_| seed.set((js_sys::Math::random() * 1e9) as u64)>"Random seed"</button>
            </div>
            {(!class_names.is_empty()).then(|| view! { <GuidanceControls names=class_names.clone() /> })}
            <div class="controls">
                <button class="generate" disabled=move || busy.get() on:click=move |_| run_noise(Start::Noise, None)>"Generate"</button>
                <button class="sdedit" disabled=move || busy.get() on:click=move |_| run(Start::FromX0, None)>{sdedit_label}</button>
                <button class="stop" disabled=move || !running.get() on:click=move |_| stop.set(true)>"Stop"</button>
            </div>
            <div class="status" role="status">
                <progress max=move || progress.get().1.max(1) value=move || progress.get().0></progress>
                {move || { let (d, n) = progress.get(); format!(" step {d} of {n}") }}
                {move || if step_ms.get() > 0.0 { format!(" · {:.1} ms/step", step_ms.get()) } else { String::new() }}
                <span class="eta">{eta_text}</span>
            </div>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <div class="pair">
                <figure><PictureCanvas picture=x_t_img label="x_t for 16 samples" class="grid" /><figcaption>"x_t"</figcaption></figure>
                <figure><PictureCanvas picture=x0_img label="predicted x_0 for 16 samples" class="grid" /><figcaption>"x̂_0 (predicted)"</figcaption></figure>
                <figure><PictureCanvas picture=eps_img label="predicted noise for 16 samples" class="grid" /><figcaption>"ε̂ (÷3: ±3σ is black to white)"</figcaption></figure>
            </div>
            <div class="slider">
                <label for="replay">"Replay step"</label>
                <div class="slider-row">
                    <PlayButton what="the replay" every_ms=60 disabled=Signal::derive(move || running.get() || frames.with(|f| f.len() < 2))
                        advance=move || {
                            let (now, last) = (shown.get_untracked(), last_frame());
                            // From the end, start over; a long chain plays in about 100 frames.
                            let next = if now >= last { 0 } else { (now + last.div_ceil(100)).min(last) };
                            shown.set(next);
                            step.set(frames.with_untracked(|f| f.get(next).and_then(|f| f.coefs)));
                            next < last
                        } />
                    <input type="range" id="replay" class="scrubber" min="0" max=move || last_frame().to_string()
                        disabled=move || running.get() || frames.with(|f| f.len() < 2)
                        prop:value=move || shown.get().to_string()
                        aria-valuetext=move || current().and_then(|f| f.coefs).map(|c| format!("step at t = {}", c.t)).unwrap_or("x_T".into())
                        on:input=move |ev| {
                            if let Ok(v) = event_target_value(&ev).parse::<usize>() {
                                shown.set(v);
                                step.set(frames.with_untracked(|f| f.get(v).and_then(|f| f.coefs)));
                            }
                        } />
                </div>
            </div>
            <div class="controls">
                <DownloadButton label="Save samples (PNG)" filename="ddpm-samples.png" scale=4
                    ready=Signal::derive(move || frames.with(|f| !f.is_empty()))
                    picture=move || current().map(|f| f.x_t) />
                <DownloadButton label="Save chain (PNG)" filename="ddpm-chain.png" scale=3
                    ready=Signal::derive(move || frames.with(|f| f.len() > 1))
                    picture=move || frames.with(|f| (f.len() > 1).then(|| chain_figure(f, image, CHAIN_FIGURE_STEPS))) />
            </div>
            <Equation mathml=step_equation />
            <p class="sources">
                "Sources: " <a href=DDPM_PAPER>"Ho et al. 2020"</a> " (eqs. 4, 7, 11; Algorithm 2), "
                <a href=DDIM_PAPER>"Song et al. 2021"</a> " (eq. 12), " <a href=SDEDIT_PAPER>"Meng et al. 2022"</a>
                " (SDEdit); the authors' code: " <a href=DDPM_CODE>"hojonathanho/diffusion"</a>
                "; here: " <code>"src/diffusion/sampler/"</code> "."
            </p>
        </section>
    }
}

/// Columns of the chain figure: x_T, evenly spaced steps, x_0.
pub const CHAIN_FIGURE_STEPS: usize = 10;

/// `k` indices evenly spread over `0..len`, first and last included (fewer when `len < k`).
pub fn evenly_spaced(len: usize, k: usize) -> Vec<usize> {
    match (len, k) {
        (0, _) | (_, 0) => Vec::new(),
        (1, _) | (_, 1) => vec![len - 1],
        _ => {
            let k = k.min(len);
            (0..k).map(|i| (i * (len - 1) + (k - 1) / 2) / (k - 1)).collect()
        }
    }
}

/// The chain as one figure: a row per sample, a column per shown step (x_T on the left, x_0 on the
/// right), cut from the recorded x_t grids.
pub fn chain_figure(frames: &[Frame], image: ImageShape, columns: usize) -> Picture {
    let steps = evenly_spaced(frames.len(), columns);
    let cells: Vec<Picture> = (0..BATCH)
        .flat_map(|sample| {
            steps
                .iter()
                .map(move |&k| frames[k].x_t.grid_cell(sample, image.size, GRID_COLUMNS, GRID_PAD))
        })
        .collect();
    Picture::arrange(&cells, steps.len(), GRID_PAD)
}

/// " · about 12 s left" for `(done, total)` steps at `ms_per_step`; empty when that is unknown or
/// nothing is left.
pub fn time_left((done, total): (usize, usize), ms_per_step: f64) -> String {
    if ms_per_step > 0.0 && done < total {
        format!(" · about {} left", format_duration(ms_per_step * (total - done) as f64))
    } else {
        String::new()
    }
}

/// "12 s", "3 min 05 s": how long the rest of a chain will take.
pub fn format_duration(ms: f64) -> String {
    let s = (ms / 1000.0).round() as u64;
    match s {
        0 => "under a second".into(),
        1..60 => format!("{s} s"),
        _ => format!("{} min {:02} s", s / 60, s % 60),
    }
}

/// The reverse panel's own signals: what a running chain reports and the panel shows.
#[derive(Clone, Copy)]
struct ChainView {
    /// Set to end the chain after the current step.
    stop: RwSignal<bool>,
    /// Steps done and in all.
    progress: RwSignal<(usize, usize)>,
    /// The time between the last two frames (a step as the page shows it).
    step_ms: RwSignal<f64>,
    /// Every step's pictures, x_T first.
    frames: RwSignal<Vec<Frame>>,
    /// The frame on screen (the replay slider moves it).
    shown: RwSignal<usize>,
}

impl ChainView {
    fn new() -> Self {
        Self {
            stop: RwSignal::new(false),
            progress: RwSignal::new((0, 0)),
            step_ms: RwSignal::new(0.0),
            frames: RwSignal::new(Vec::new()),
            shown: RwSignal::new(0),
        }
    }
}

/// Runs one chain to the end (or until `stop`), recording and showing every step.
async fn run_chain(engine: &Engine, start: Start, state: PageState, view: ChainView) -> Result<(), String> {
    let PageState {
        sampler,
        seed,
        x0,
        t,
        noise_seed,
        step,
        schedule: shown_schedule,
        ..
    } = state;
    let schedule = engine.config.noise_schedule().map_err(|e| e.to_string())?;
    let seed = seed.get_untracked();
    let image = state.image;
    let shape = image.batch(BATCH);
    let device = &engine.device;
    let mut chain = match start {
        Start::Noise => {
            let sampler = sampler.get_untracked().build(&schedule).map_err(|e| e.to_string())?;
            ReverseChain::from_noise(&engine.unet, sampler, shape, seed, device)
        }
        Start::FromX0 => {
            // The noise level the forward panel shows, on the model's schedule (the same t when the
            // panel shows the model's schedule).
            let start_t = shown_schedule
                .with_untracked(|s| schedule.nearest_t(s.alpha_bar[t.get_untracked().min(s.timesteps() - 1)]));
            let x0: Vec<f32> = x0.with_untracked(|x| x.iter().cycle().take(BATCH * image.values()).copied().collect());
            let x0 = Tensor::<4>::from_data(TensorData::new(x0, shape), device);
            // The first image gets the forward panel's ε (its x_t is the one on screen), the others
            // fresh draws, so the grid shows how many digits one sketch can become.
            let mut noise = forward_noise(noise_seed.get_untracked(), image);
            noise.extend(
                NoiseRng::new(NoiseRng::stream_seed(seed, SDEDIT_NOISE_STREAM))
                    .normal_vec((BATCH - 1) * image.values()),
            );
            let noise = Tensor::<4>::from_data(TensorData::new(noise, shape), device);
            let config = sampler.get_untracked();
            ReverseChain::sdedit(&engine.unet, &config, &schedule, x0, start_t, noise, seed)
                .map_err(|e| e.to_string())?
        }
    };
    let (done, total) = chain.progress();
    view.progress.set((0, total - done));
    let first = Frame {
        coefs: None,
        x_t: grid(image, &read_back(chain.current()).await?),
        pred_x0: grid(image, &vec![-1.0; BATCH * image.values()]),
        eps: grid(image, &vec![0.0; BATCH * image.values()]),
    };
    view.frames.set(vec![first]);
    view.shown.set(0);
    let offset = done;
    let mut last_frame = now_ms();
    let guidance = state.guidance_for(BATCH);
    let show_step = async |stepped: Vec<(usize, ChainStep)>| {
        for (_, s) in stepped {
            let [x_t, pred_x0, eps] = read_back_all([s.x_prev, s.pred_x0, s.eps.div_scalar(3.0)]).await?;
            view.frames.update(|f| {
                f.push(Frame {
                    coefs: Some(s.coefs),
                    x_t: grid(image, &x_t),
                    pred_x0: grid(image, &pred_x0),
                    eps: grid(image, &eps),
                })
            });
            view.shown.set(s.index + 1 - offset);
            view.progress.set((s.index + 1 - offset, total - offset));
            step.set(Some(s.coefs));
            let now = now_ms();
            view.step_ms.set(now - last_frame);
            last_frame = now;
        }
        Ok(())
    };
    drive_chains(
        engine,
        std::slice::from_mut(&mut chain),
        &[guidance],
        || view.stop.get_untracked(),
        show_step,
    )
    .await?;
    Ok(())
}
