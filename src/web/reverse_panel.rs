//! The reverse process x_T → x_0: run a chain on the model's device, show x_t and x̂_0 side by
//! side as it goes, stop it, and replay any step afterwards.

use super::canvas::{PictureCanvas, now_ms, yield_to_browser};
use super::engine::Engine;
use super::forward_panel::{SIZE, forward_noise};
use super::state::PageState;
use crate::diffusion::sampler::{DEFAULT_DDIM_STEPS, ReverseChain, SamplerConfig, StepCoefs, VarianceKind};
use crate::image::GrayImage;
use crate::rng::NoiseRng;
use burn::tensor::{Tensor, TensorData};
use leptos::prelude::*;
use leptos::task::spawn_local;
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
    pub x_t: GrayImage,
    /// Grid of x̂_0 (black for x_T).
    pub pred_x0: GrayImage,
    /// Grid of the model's ε̂, divided by 3 so ±3σ spans black to white (grey for x_T).
    pub eps: GrayImage,
}

fn grid(pixels: &[f32]) -> GrayImage {
    GrayImage::grid(pixels, SIZE, 4, 1)
}

/// Reads a batch back (asynchronously: the browser forbids blocking reads) as host floats.
pub async fn read_back(t: Tensor<4>) -> Result<Vec<f32>, String> {
    let data = t.into_data_async().await.map_err(|e| e.to_string())?;
    data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}

/// Reads several tensors back in one transaction: one wait for the GPU per step, however many
/// pictures the step shows.
pub async fn read_back_all<const N: usize>(tensors: [Tensor<4>; N]) -> Result<[Vec<f32>; N], String> {
    let data = tensors
        .into_iter()
        .fold(burn::tensor::Transaction::default(), |t, x| t.register(x))
        .execute_async()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| d.try_to_vec::<f32>().map_err(|e| format!("{e:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    data.try_into()
        .map_err(|d: Vec<Vec<f32>>| format!("the transaction returned {} tensors, not {N}", d.len()))
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
        sampler, seed, t, step, ..
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

    let run = move |start: Start| {
        if running.get_untracked() {
            return;
        }
        let engine: Rc<Engine> = Rc::clone(&engine);
        spawn_local(async move {
            running.set(true);
            stop.set(false);
            error.set(None);
            if let Err(e) = run_chain(&engine, start, state, chain_view).await {
                error.set(Some(e));
            }
            running.set(false);
        });
    };
    let run_noise = run.clone();
    let current = move || frames.with(|f| f.get(shown.get()).cloned());
    let x_t_img = Signal::derive(move || current().map(|f| f.x_t));
    let x0_img = Signal::derive(move || current().map(|f| f.pred_x0));
    let eps_img = Signal::derive(move || current().map(|f| f.eps));
    let is_ddim = move || matches!(sampler.get(), SamplerConfig::Ddim { .. });
    // Each sampler keeps its own settings while the other is chosen (switching back restores them).
    let initial = sampler.get_untracked();
    let last_ddim = RwSignal::new(match initial {
        SamplerConfig::Ddim { .. } => initial,
        _ => SamplerConfig::default(),
    });
    let last_ddpm = RwSignal::new(match initial {
        SamplerConfig::Ddpm { .. } => initial,
        _ => SamplerConfig::Ddpm {
            variance: VarianceKind::default(),
            clip_x0: true,
        },
    });
    Effect::new(move |_| match sampler.get() {
        ddim @ SamplerConfig::Ddim { .. } => last_ddim.set(ddim),
        ddpm => last_ddpm.set(ddpm),
    });
    view! {
        <section class="reverse" aria-label="reverse process">
            <h2>"Reverse process x_T → x_0"</h2>
            <div class="controls">
                <label>"Sampler "
                    <select prop:value=move || if is_ddim() { "ddim" } else { "ddpm" }
                        on:change=move |ev| sampler.set(if event_target_value(&ev) == "ddpm" {
                            last_ddpm.get_untracked()
                        } else {
                            last_ddim.get_untracked()
                        })>
                        <option value="ddim">"DDIM"</option>
                        <option value="ddpm">"DDPM (all steps)"</option>
                    </select>
                </label>
                <Show when=is_ddim fallback=move || view! {
                    <label>"σ_t² "
                        <select prop:value=move || match sampler.get() {
                                SamplerConfig::Ddpm { variance, .. } => variance.name(),
                                _ => VarianceKind::default().name(),
                            }
                            on:change=move |ev| {
                            if let Ok(v) = event_target_value(&ev).parse::<VarianceKind>() {
                                sampler.set(SamplerConfig::Ddpm { variance: v, clip_x0: true })
                            }
                        }>
                            <option value="beta-tilde">"β̃_t"</option>
                            <option value="beta">"β_t"</option>
                        </select>
                    </label>
                }>
                    <label>"steps "
                        <input type="number" min="1" max=timesteps.to_string() class="steps"
                            prop:value=move || match sampler.get() { SamplerConfig::Ddim { steps, .. } => steps, _ => DEFAULT_DDIM_STEPS }.to_string()
                            on:change=move |ev| {
                                if let (Ok(v), SamplerConfig::Ddim { eta, clip_x0, .. }) = (event_target_value(&ev).parse::<usize>(), sampler.get_untracked()) {
                                    sampler.set(SamplerConfig::Ddim { steps: v.clamp(1, timesteps), eta, clip_x0 })
                                }
                            } />
                    </label>
                    <label>"η "
                        <input type="number" min="0" max="1" step="0.1" class="eta"
                            prop:value=move || match sampler.get() { SamplerConfig::Ddim { eta, .. } => eta, _ => 0.0 }.to_string()
                            on:change=move |ev| {
                                if let (Ok(v), SamplerConfig::Ddim { steps, clip_x0, .. }) = (event_target_value(&ev).parse::<f64>(), sampler.get_untracked()) {
                                    sampler.set(SamplerConfig::Ddim { steps, eta: v.clamp(0.0, 1.0), clip_x0 })
                                }
                            } />
                    </label>
                </Show>
                <label>"seed "
                    <input type="number" min="0" class="seed" prop:value=move || seed.get().to_string()
                        on:change=move |ev| {
                            if let Ok(v) = event_target_value(&ev).parse::<u64>() {
                                seed.set(v)
                            }
                        } />
                </label>
                <button class="random-seed" title="a new random seed" disabled=move || running.get()
                    on:click=move |_| seed.set((js_sys::Math::random() * 1e9) as u64)>"Random seed"</button>
            </div>
            <div class="controls">
                <button class="generate" disabled=move || running.get() on:click=move |_| run_noise(Start::Noise)>"Generate"</button>
                <button class="sdedit" disabled=move || running.get() on:click=move |_| run(Start::FromX0)>
                    "Start from x_0 at t = " {move || t.get()}
                </button>
                <button class="stop" disabled=move || !running.get() on:click=move |_| stop.set(true)>"Stop"</button>
            </div>
            <div class="status" role="status">
                <progress max=move || progress.get().1.max(1) value=move || progress.get().0></progress>
                {move || { let (d, n) = progress.get(); format!(" step {d} of {n}") }}
                {move || if step_ms.get() > 0.0 { format!(" · {:.1} ms/step", step_ms.get()) } else { String::new() }}
            </div>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <div class="pair">
                <figure><PictureCanvas picture=x_t_img label="x_t for 16 samples" class="grid" /><figcaption>"x_t"</figcaption></figure>
                <figure><PictureCanvas picture=x0_img label="predicted x_0 for 16 samples" class="grid" /><figcaption>"x̂_0 (predicted)"</figcaption></figure>
                <figure><PictureCanvas picture=eps_img label="predicted noise for 16 samples" class="grid" /><figcaption>"ε̂ (÷3: ±3σ is black to white)"</figcaption></figure>
            </div>
            <label class="slider">
                <span>"Replay step"</span>
                <input type="range" class="scrubber" min="0" max=move || frames.with(|f| f.len().saturating_sub(1)).to_string()
                    disabled=move || running.get() || frames.with(|f| f.len() < 2)
                    prop:value=move || shown.get().to_string()
                    aria-valuetext=move || current().and_then(|f| f.coefs).map(|c| format!("step at t = {}", c.t)).unwrap_or("x_T".into())
                    on:input=move |ev| {
                        if let Ok(v) = event_target_value(&ev).parse::<usize>() {
                            shown.set(v);
                            step.set(frames.with_untracked(|f| f.get(v).and_then(|f| f.coefs)));
                        }
                    } />
            </label>
        </section>
    }
}

/// The reverse panel's own signals: what a running chain reports and the panel shows.
#[derive(Clone, Copy)]
struct ChainView {
    /// Set to end the chain after the current step.
    stop: RwSignal<bool>,
    /// Steps done and in all.
    progress: RwSignal<(usize, usize)>,
    /// The last step's time.
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
        ..
    } = state;
    let schedule = engine.config.noise_schedule().map_err(|e| e.to_string())?;
    let seed = seed.get_untracked();
    let shape = [BATCH, 1, SIZE, SIZE];
    let device = &engine.device;
    let mut chain = match start {
        Start::Noise => {
            let sampler = sampler.get_untracked().build(&schedule).map_err(|e| e.to_string())?;
            ReverseChain::from_noise(&engine.unet, sampler, shape, seed, device)
        }
        Start::FromX0 => {
            let start_t = t.get_untracked().min(schedule.timesteps() - 1);
            let x0: Vec<f32> = x0.with_untracked(|x| x.iter().cycle().take(BATCH * SIZE * SIZE).copied().collect());
            let x0 = Tensor::<4>::from_data(TensorData::new(x0, shape), device);
            // The first image gets the forward panel's ε (its x_t is the one on screen), the others
            // fresh draws, so the grid shows how many digits one sketch can become.
            let mut noise = forward_noise(noise_seed.get_untracked());
            noise.extend(
                NoiseRng::new(NoiseRng::stream_seed(seed, SDEDIT_NOISE_STREAM)).normal_vec((BATCH - 1) * SIZE * SIZE),
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
        x_t: grid(&read_back(chain.current()).await?),
        pred_x0: grid(&vec![-1.0; BATCH * SIZE * SIZE]),
        eps: grid(&vec![0.0; BATCH * SIZE * SIZE]),
    };
    view.frames.set(vec![first]);
    view.shown.set(0);
    let offset = done;
    while !view.stop.get_untracked() {
        let started = now_ms();
        let Some(s) = chain.step() else { break };
        let [x_t, pred_x0, eps] = read_back_all([s.x_prev, s.pred_x0, s.eps.div_scalar(3.0)]).await?;
        view.step_ms.set(now_ms() - started);
        view.frames.update(|f| {
            f.push(Frame {
                coefs: Some(s.coefs),
                x_t: grid(&x_t),
                pred_x0: grid(&pred_x0),
                eps: grid(&eps),
            })
        });
        view.shown.set(s.index + 1 - offset);
        view.progress.set((s.index + 1 - offset, total - offset));
        step.set(Some(s.coefs));
        yield_to_browser().await;
    }
    Ok(())
}
