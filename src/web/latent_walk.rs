//! A walk through the latent space: the x_T of two seeds, spherically interpolated and decoded by
//! deterministic DDIM into a strip of digits that morph from one seed's sample into the other's.

use super::canvas::PictureCanvas;
use super::chain_driver::{drive_chains, read_back};
use super::controls::DownloadButton;
use super::engine::Engine;
use super::models::ImageNoun;
use super::state::PageState;
use crate::diffusion::sampler::interpolate::interpolation_latents;
use crate::diffusion::sampler::{ChainStep, Guidance, ReverseChain, SamplerPlan};
use crate::image::Picture;
use leptos::prelude::*;
use send_wrapper::SendWrapper;
use std::rc::Rc;

/// Digits in the strip, the two seeds' own samples at its ends.
pub const WALK_FRAMES: usize = 10;
/// DDIM steps of the walk (η = 0: the map from x_T to x_0 is a fixed function).
pub const WALK_STEPS: usize = 20;

/// The latent walk, folded away until opened.
#[component]
pub fn LatentWalk(
    /// The model.
    engine: SendWrapper<Rc<Engine>>,
) -> impl IntoView {
    let ImageNoun { one, many } = engine.model.noun.clone();
    let state = PageState::expect();
    let PageState { seed, busy, .. } = state;
    let seed_b = RwSignal::new(seed.get_untracked().wrapping_add(1));
    let strip = RwSignal::new(None::<Picture>);
    let progress = RwSignal::new((0usize, WALK_STEPS));
    let error = RwSignal::new(None::<String>);
    let walk = move |_| {
        let engine = Rc::clone(&engine);
        state.run_exclusive(error, async move {
            let guidance = state.guidance_for(WALK_FRAMES);
            run_walk(
                &engine,
                (seed.get_untracked(), seed_b.get_untracked()),
                guidance,
                strip,
                progress,
            )
            .await
        });
    };
    view! {
        <section class="walk" aria-label="latent walk">
            <details>
                <summary><h2>"Walk between two seeds"</h2></summary>
                <p class="explain">
                    {format!("With η = 0, DDIM turns each x_T into one {one}, always the same. Walking x_T along the great circle ")}
                    "from one seed's noise to another's (spherical interpolation keeps the norm of Gaussian noise, which a "
                    {format!("straight line would shrink by up to 1/√2) and decoding every point shows how the model's {many} ")}
                    "are laid out in its latent space: the ends are the two seeds' own samples. "
                    {format!("{WALK_FRAMES} {many}, DDIM-{WALK_STEPS}.")}
                </p>
                <div class="controls">
                    <label>"from seed " <input type="number" min="0" class="seed-a" prop:value=move || seed.get().to_string()
                        on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u64>() { seed.set(v) } } /></label>
                    <label>"to seed " <input type="number" min="0" class="seed-b" prop:value=move || seed_b.get().to_string()
                        on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u64>() { seed_b.set(v) } } /></label>
                    <button class="run-walk" disabled=move || busy.get() on:click=walk>"Walk"</button>
                    <DownloadButton label="Save strip (PNG)" filename="ddpm-latent-walk.png" scale=4
                        ready=Signal::derive(move || strip.with(|s| s.is_some())) picture=move || strip.get() />
                </div>
                <div class="status" role="status">
                    <progress max=WALK_STEPS value=move || progress.get().0></progress>
                    {move || { let (d, n) = progress.get(); format!(" step {d} of {n}") }}
                </div>
                {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                <PictureCanvas picture=strip label="the walk's samples, from one seed to the other" class="strip" />
            </details>
        </section>
    }
}

/// Decodes the walk from seed `a` to seed `b`, showing x_t of every digit after each step.
async fn run_walk(
    engine: &Engine,
    seeds: (u64, u64),
    guidance: Option<Guidance>,
    strip: RwSignal<Option<Picture>>,
    progress: RwSignal<(usize, usize)>,
) -> Result<(), String> {
    let schedule = engine.config.noise_schedule().map_err(|e| e.to_string())?;
    let plan =
        SamplerPlan::ddim(&schedule, WALK_STEPS.min(schedule.timesteps()), 0.0, true).map_err(|e| e.to_string())?;
    let total = plan.timesteps().len();
    let image = engine.image();
    let latents = interpolation_latents(
        [image.channels, image.size, image.size],
        seeds,
        WALK_FRAMES,
        &engine.device,
    ); // [frames, c, s, s]
    let mut chain = ReverseChain::from_latent(&engine.unet, plan, latents, seeds.0);
    let show = |pixels: &[f32]| image.grid(pixels, WALK_FRAMES, 1);
    strip.set(Some(show(&read_back(chain.current()).await?)));
    progress.set((0, total));
    let show_step = async |stepped: Vec<(usize, ChainStep)>| {
        for (_, s) in stepped {
            strip.set(Some(show(&read_back(s.x_prev).await?)));
            progress.set((s.index + 1, total));
        }
        Ok(())
    };
    drive_chains(
        engine,
        std::slice::from_mut(&mut chain),
        &[guidance],
        || false,
        show_step,
    )
    .await?;
    Ok(())
}
