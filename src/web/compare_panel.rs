//! Two samplers side by side: the same model, the same seed, the same x_T, stepping together (at
//! the same noise level), each with its x_t and x̂_0, and how far apart they are at every step.

use super::canvas::{PictureCanvas, now_ms};
use super::chain_driver::{drive_chains, read_back, read_back_all};
use super::controls::SamplerControls;
use super::engine::Engine;
use super::reverse_panel::time_left;
use super::schedule_plot::{Axes, Axis, polyline};
use super::state::PageState;
use crate::diffusion::sampler::{ChainStep, Guidance, ReverseChain, SamplerConfig, VarianceKind};
use crate::image::{ImageShape, Picture};
use crate::view_state::PAGE_MAX_GUIDANCE;
use leptos::prelude::*;
use send_wrapper::SendWrapper;
use std::collections::BTreeSet;
use std::rc::Rc;

/// Images per chain (a 2 × 2 grid): two chains cost what one of the main panel's would at 8.
pub const COMPARE_BATCH: usize = 4;

/// Root-mean-square difference of two equally long pixel vectors.
pub fn rms_difference(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    (a.iter()
        .zip(b)
        .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt()
}

/// One side of the comparison: its sampler, its guidance scale and what it shows.
#[derive(Clone, Copy)]
struct Side {
    sampler: RwSignal<SamplerConfig>,
    /// w, for a class-conditional model with a class picked.
    guidance: RwSignal<f64>,
    x_t: RwSignal<Option<Picture>>,
    pred_x0: RwSignal<Option<Picture>>,
    /// The timestep its last step denoised.
    t: RwSignal<Option<usize>>,
}

impl Side {
    fn new(sampler: SamplerConfig, guidance: f64) -> Self {
        Self {
            sampler: RwSignal::new(sampler),
            guidance: RwSignal::new(guidance),
            x_t: RwSignal::new(None),
            pred_x0: RwSignal::new(None),
            t: RwSignal::new(None),
        }
    }
}

/// One point of the difference plot: after the round that denoised `t`, the RMS difference of the
/// two x̂_0 and of the two x_t.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Difference {
    t: usize,
    pred_x0: f64,
    x_t: f64,
}

fn small_grid(image: ImageShape, pixels: &[f32]) -> Picture {
    image.grid(pixels, 2, 1)
}

/// The comparison, folded away until opened (nothing runs before "Compare" is pressed).
#[component]
pub fn ComparePanel(
    /// The model.
    engine: SendWrapper<Rc<Engine>>,
) -> impl IntoView {
    let state = PageState::expect();
    let PageState { seed, busy, class, .. } = state;
    let timesteps = engine.config.timesteps;
    let conditional = engine.config.unet.num_classes.is_some();
    let many = engine.model.noun.many.clone();
    let w = state.guidance.get_untracked();
    let sides = [
        Side::new(SamplerConfig::default_for(timesteps), w),
        Side::new(
            SamplerConfig::Ddpm {
                variance: VarianceKind::BetaTilde,
                clip_x0: true,
            },
            w,
        ),
    ];
    // Guidance against none: one sampler on both sides, w = 0 on the left and 3 on the right (a
    // class is needed for guidance to act: the first one when none is picked).
    let guidance_preset = move |_| {
        sides[1].sampler.set(sides[0].sampler.get_untracked());
        sides[0].guidance.set(0.0);
        sides[1].guidance.set(3.0);
        if class.get_untracked().is_none() {
            class.set(Some(0));
        }
    };
    let differences = RwSignal::new(Vec::<Difference>::new());
    let progress = RwSignal::new((0usize, 0usize));
    let round_ms = RwSignal::new(0.0f64);
    let running = RwSignal::new(false);
    let stop = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);

    let compare = move |_| {
        let engine = Rc::clone(&engine);
        state.run_exclusive(error, async move {
            running.set(true);
            stop.set(false);
            let run = ComparisonRun {
                sides,
                differences,
                progress,
                round_ms,
                stop,
            };
            let result = run.go(&engine, seed.get_untracked(), class.get_untracked()).await;
            running.set(false);
            result
        });
    };

    let x = Axis {
        from: (timesteps - 1) as f64,
        to: 0.0,
        ticks: vec![(timesteps - 1) as f64, (timesteps / 2) as f64, 0.0],
        title: "timestep t (the chains run left to right)",
    };
    let y = Axis {
        from: 0.0,
        to: 1.5,
        ticks: vec![0.0, 0.5, 1.0, 1.5],
        title: "RMS difference",
    };
    let curve = {
        let (x, y) = (x.clone(), y.clone());
        move |pick: fn(&Difference) -> f64| {
            let (x, y) = (x.clone(), y.clone());
            move || differences.with(|d| polyline(&x, &y, d.iter().map(|p| (p.t as f64, pick(p)))))
        }
    };
    let x0_curve = curve(|d| d.pred_x0);
    let xt_curve = curve(|d| d.x_t);
    let latest = move || {
        differences.with(|d| {
            d.last().map(|p| {
                format!(
                    "after t = {}: RMS difference of x̂_0 {:.3}, of x_t {:.3}",
                    p.t, p.pred_x0, p.x_t
                )
            })
        })
    };
    let side_view = move |side: Side, name: &'static str| {
        view! {
            <div class="side">
                <h3>{name} ": " {move || side.sampler.get().to_string()}
                    {move || class.get().filter(|_| conditional).map(|_| format!(", w = {}", side.guidance.get()))}</h3>
                <div class="controls">
                    <SamplerControls sampler=side.sampler timesteps=timesteps />
                    <Show when=move || conditional>
                        <label>"w "
                            <input type="number" class="side-guidance" min="0" max=PAGE_MAX_GUIDANCE.to_string() step="0.5"
                                disabled=move || class.get().is_none()
                                prop:value=move || side.guidance.get().to_string()
                                on:change=move |ev| {
                                    let w = event_target_value(&ev).parse::<f64>().ok().filter(|w| (0.0..=PAGE_MAX_GUIDANCE).contains(w));
                                    side.guidance.set(w.unwrap_or(side.guidance.get_untracked()))
                                } />
                        </label>
                    </Show>
                </div>
                <div class="pair">
                    <figure>
                        <PictureCanvas picture=side.x_t label="x_t of this chain" class="grid small" />
                        <figcaption>{move || side.t.get().map_or("x_T".to_string(), |t| format!("x_t after t = {t}"))}</figcaption>
                    </figure>
                    <figure>
                        <PictureCanvas picture=side.pred_x0 label="predicted x_0 of this chain" class="grid small" />
                        <figcaption>"x̂_0"</figcaption>
                    </figure>
                </div>
            </div>
        }
    };
    view! {
        <section class="compare" aria-label="samplers side by side">
            <details>
                <summary><h2>"Compare samplers side by side"</h2></summary>
                <p class="explain">
                    "Both chains start from the same x_T (the seed above) and run the same model; they step together, so "
                    "both are always at the same noise level (a DDPM chain takes many steps for each DDIM step). With η = 0 "
                    {format!("DDIM is deterministic; DDPM and DDIM with η > 0 add fresh noise at every step, so their {many} drift apart ")}
                    "from each other even though they start from one x_T. A second schedule (linear vs cosine) needs a model "
                    "trained with it; this page ships one, trained with the linear schedule."
                </p>
                <Show when=move || conditional>
                    <p class="explain">
                        "With a class picked, each side has its own guidance scale w: “w = 0 against w = 3” runs one sampler "
                        "from one x_T both ways, so what guidance changes is all that differs."
                    </p>
                </Show>
                <div class="sides">
                    {side_view(sides[0], "A")}
                    {side_view(sides[1], "B")}
                </div>
                <div class="controls">
                    <button class="run-compare" disabled=move || busy.get() on:click=compare>"Compare"</button>
                    <button class="stop" disabled=move || !running.get() on:click=move |_| stop.set(true)>"Stop"</button>
                    <Show when=move || conditional>
                        <button class="guidance-preset" disabled=move || busy.get() on:click=guidance_preset>
                            "Guidance: w = 0 against w = 3"
                        </button>
                    </Show>
                </div>
                <div class="status" role="status">
                    <progress max=move || progress.get().1.max(1) value=move || progress.get().0></progress>
                    {move || { let (d, n) = progress.get(); format!(" round {d} of {n}") }}
                    {move || if running.get() { time_left(progress.get(), round_ms.get()) } else { String::new() }}
                </div>
                {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                <p class="difference">{latest}</p>
                <Axes x=x y=y label="RMS difference between the chains against t".to_string() class="difference-plot">
                    <polyline points=x0_curve class="curve alpha-bar" />
                    <polyline points=xt_curve class="curve snr" />
                </Axes>
                <p class="formula">"solid: x̂_0 of A vs B; dashed: x_t of A vs B (pixels in [−1, 1])"</p>
            </details>
        </section>
    }
}

/// What a running comparison writes to.
struct ComparisonRun {
    sides: [Side; 2],
    differences: RwSignal<Vec<Difference>>,
    progress: RwSignal<(usize, usize)>,
    round_ms: RwSignal<f64>,
    stop: RwSignal<bool>,
}

impl ComparisonRun {
    /// Runs both chains from `seed` to x_0 (or until stopped), in lockstep, each asking for
    /// `class` with its own w (`None`: no class, the unconditional chains).
    async fn go(&self, engine: &Engine, seed: u64, class: Option<usize>) -> Result<(), String> {
        let guidance = self.sides.map(|side| {
            class.map(|c| Guidance {
                classes: vec![Some(c); COMPARE_BATCH],
                scale: side.guidance.get_untracked(),
            })
        });
        let schedule = engine.config.noise_schedule().map_err(|e| e.to_string())?;
        let image = engine.image();
        let shape = image.batch(COMPARE_BATCH);
        let plans = [
            self.sides[0].sampler.get_untracked().build(&schedule),
            self.sides[1].sampler.get_untracked().build(&schedule),
        ];
        let [a, b] = plans.map(|p| p.map_err(|e| e.to_string()));
        let (a, b) = (a?, b?);
        let rounds = a.timesteps().iter().chain(b.timesteps()).collect::<BTreeSet<_>>().len();
        let mut chains = [a, b].map(|plan| ReverseChain::from_noise(&engine.unet, plan, shape, seed, &engine.device));
        let x_t = read_back(chains[0].current()).await?;
        let mut latest = [x_t.clone(), x_t.clone()];
        let mut latest_x0 = [vec![-1.0f32; x_t.len()], vec![-1.0f32; x_t.len()]];
        for side in self.sides {
            side.x_t.set(Some(small_grid(image, &x_t)));
            side.pred_x0.set(Some(small_grid(image, &latest_x0[0])));
            side.t.set(None);
        }
        self.differences.set(Vec::new());
        self.progress.set((0, rounds));
        let (mut done, mut last_round) = (0, now_ms());
        let show_round = async |stepped: Vec<(usize, ChainStep)>| {
            let mut t = 0;
            for (i, s) in stepped {
                let [x_prev, pred_x0] = read_back_all([s.x_prev, s.pred_x0]).await?;
                self.sides[i].x_t.set(Some(small_grid(image, &x_prev)));
                self.sides[i].pred_x0.set(Some(small_grid(image, &pred_x0)));
                self.sides[i].t.set(Some(s.coefs.t));
                t = t.max(s.coefs.t);
                latest[i] = x_prev;
                latest_x0[i] = pred_x0;
            }
            self.differences.update(|d| {
                d.push(Difference {
                    t,
                    pred_x0: rms_difference(&latest_x0[0], &latest_x0[1]),
                    x_t: rms_difference(&latest[0], &latest[1]),
                })
            });
            done += 1;
            self.progress.set((done, rounds));
            let now = now_ms();
            self.round_ms.set(now - last_round);
            last_round = now;
            Ok(())
        };
        drive_chains(engine, &mut chains, &guidance, || self.stop.get_untracked(), show_round).await?;
        Ok(())
    }
}
