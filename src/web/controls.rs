//! Controls more than one panel uses: the sampler settings, a play/pause button and a PNG
//! download button.

use super::canvas::draw_picture;
use crate::diffusion::sampler::{SamplerConfig, SamplerSetting, VarianceKind};
use crate::image::Picture;
use leptos::prelude::*;
use std::time::Duration;
use wasm_bindgen::JsCast;

/// Sampler, then σ_t² (DDPM) or steps and η (DDIM). Each sampler keeps its own settings while the
/// other is chosen, so switching back restores them.
#[component]
pub fn SamplerControls(
    /// The sampler being set.
    sampler: RwSignal<SamplerConfig>,
    /// The model's T (the most DDIM steps).
    timesteps: usize,
) -> impl IntoView {
    let is_ddim = move || matches!(sampler.get(), SamplerConfig::Ddim { .. });
    let initial = sampler.get_untracked();
    let last_ddim = RwSignal::new(match initial {
        SamplerConfig::Ddim { .. } => initial,
        _ => SamplerConfig::default_for(timesteps),
    });
    let last_ddpm = RwSignal::new(match initial {
        SamplerConfig::Ddpm { .. } => initial,
        _ => SamplerConfig::Ddpm {
            variance: VarianceKind::default(),
            clip_x0: true,
        },
    });
    // A setting is taken as the sampler's grammar checks it (and brought within T); one it refuses
    // leaves the sampler as it was, and setting it again puts the input back to what it shows.
    let apply = move |setting: Option<SamplerSetting>| {
        let current = sampler.get_untracked();
        let changed = setting.and_then(|s| current.with_setting(s).ok());
        sampler.set(changed.map_or(current, |c| c.within(timesteps).0));
    };
    Effect::new(move |_| match sampler.get() {
        ddim @ SamplerConfig::Ddim { .. } => last_ddim.set(ddim),
        ddpm => last_ddpm.set(ddpm),
    });
    view! {
        <label>"Sampler "
            <select class="sampler" prop:value=move || if is_ddim() { "ddim" } else { "ddpm" }
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
                <select class="variance" prop:value=move || match sampler.get() {
                        SamplerConfig::Ddpm { variance, .. } => variance.name(),
                        _ => VarianceKind::default().name(),
                    }
                    on:change=move |ev| apply(event_target_value(&ev).parse().ok().map(SamplerSetting::Variance))>
                    <option value="beta-tilde">"β̃_t"</option>
                    <option value="beta">"β_t"</option>
                </select>
            </label>
        }>
            <label>"steps "
                <input type="number" min="1" max=timesteps.to_string() class="steps"
                    prop:value=move || match sampler.get() { SamplerConfig::Ddim { steps, .. } => steps, _ => 0 }.to_string()
                    on:change=move |ev| apply(event_target_value(&ev).parse().ok().map(SamplerSetting::Steps)) />
            </label>
            <label>"η "
                <input type="number" min="0" max="1" step="0.1" class="eta"
                    prop:value=move || match sampler.get() { SamplerConfig::Ddim { eta, .. } => eta, _ => 0.0 }.to_string()
                    on:change=move |ev| apply(event_target_value(&ev).parse().ok().map(SamplerSetting::Eta)) />
            </label>
        </Show>
    }
}

/// A play/pause button: while playing it calls `advance` every `every_ms`, and stops by itself when
/// `advance` returns false (the end was reached).
#[component]
pub fn PlayButton(
    /// Moves the animation on by one frame; false when there is nothing left to show.
    advance: impl Fn() -> bool + Clone + 'static,
    /// Milliseconds between frames.
    every_ms: u64,
    /// Disables the button (e.g. while a chain runs).
    #[prop(into, optional)]
    disabled: Signal<bool>,
    /// What the button plays, for its accessible name (e.g. "the timestep").
    what: &'static str,
) -> impl IntoView {
    let playing = RwSignal::new(false);
    let handle = StoredValue::new(None::<IntervalHandle>);
    // `try_…`: on unmount the cleanup may run after the signals are gone; the timer must stop anyway.
    let pause = move || {
        if let Some(h) = handle.try_update_value(Option::take).flatten() {
            h.clear();
        }
        playing.try_set(false);
    };
    on_cleanup(pause);
    let toggle = move |_| {
        if playing.get_untracked() {
            pause();
            return;
        }
        let advance = advance.clone();
        let started = set_interval_with_handle(
            move || {
                if !advance() {
                    pause();
                }
            },
            Duration::from_millis(every_ms),
        );
        if let Ok(h) = started {
            handle.set_value(Some(h));
            playing.set(true);
        }
    };
    Effect::new(move |_| {
        if disabled.get() {
            pause();
        }
    });
    view! {
        <button class="play" disabled=move || disabled.get() on:click=toggle
            aria-label=move || format!("{} {what}", if playing.get() { "pause" } else { "play" })
            aria-pressed=move || playing.get().to_string()>
            {move || if playing.get() { "❚❚ Pause" } else { "▶ Play" }}
        </button>
    }
}

/// A button that saves a picture as a PNG file, each pixel drawn as a `scale × scale` block.
#[component]
pub fn DownloadButton(
    /// The button's text.
    label: &'static str,
    /// The file's name.
    filename: &'static str,
    /// Times each pixel is repeated across and down.
    scale: usize,
    /// Whether there is anything to save yet.
    #[prop(into)]
    ready: Signal<bool>,
    /// Makes the picture, when the button is pressed (read untracked).
    picture: impl Fn() -> Option<Picture> + 'static,
) -> impl IntoView {
    view! {
        <button class="download" disabled=move || !ready.get()
            on:click=move |_| {
                if let Some(p) = untrack(&picture) {
                    let _ = save_png(&p.scaled(scale), filename);
                }
            }>{label}</button>
    }
}

/// Saves `image` as `filename` (a PNG): drawn into a detached canvas, encoded by the browser, and
/// handed to the browser's download through a temporary link. Nothing leaves the page.
pub fn save_png(image: &Picture, filename: &str) -> Option<()> {
    let document = web_sys::window()?.document()?;
    let canvas: web_sys::HtmlCanvasElement = document.create_element("canvas").ok()?.dyn_into().ok()?;
    draw_picture(&canvas, image);
    let url = canvas.to_data_url_with_type("image/png").ok()?;
    let link: web_sys::HtmlAnchorElement = document.create_element("a").ok()?.dyn_into().ok()?;
    link.set_href(&url);
    link.set_download(filename);
    link.click();
    Some(())
}
