//! The forward process q(x_t | x_0): choose or draw x_0, drag t, watch x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε.

use super::article::{DDPM_PAPER, Equation, forward_equation};
use super::canvas::PictureCanvas;
use super::controls::PlayButton;
use super::models::ImageNoun;
use super::schedule_plot::SchedulePlot;
use super::state::PageState;
use crate::diffusion::forward::q_sample_pixels;
use crate::diffusion::schedule::{NoiseSchedule, ScheduleKind};
use crate::image::ImageShape;
use crate::rng::NoiseRng;
use leptos::html::Canvas;
use leptos::prelude::*;

/// The random stream of the forward panel's ε (see [`NoiseRng::stream_seed`]).
const FORWARD_EPS_STREAM: u64 = 1;

/// ε for the forward panel, one image of `image`'s shape: fixed by its seed until the user
/// resamples.
pub fn forward_noise(seed: u64, image: ImageShape) -> Vec<f32> {
    NoiseRng::new(NoiseRng::stream_seed(seed, FORWARD_EPS_STREAM)).normal_vec(image.values())
}

/// A canvas showing one of the model's images in [−1, 1], redrawn whenever `pixels` changes.
#[component]
pub fn ImageView(
    /// The image, `[channels, size, size]` values in [−1, 1].
    pixels: Signal<Vec<f32>>,
    /// Accessible name.
    label: &'static str,
    /// CSS class.
    #[prop(default = "digit")]
    class: &'static str,
) -> impl IntoView {
    let image = PageState::expect().image;
    let picture = Signal::derive(move || Some(pixels.with(|p| image.grid(p, 1, 0))));
    view! { <PictureCanvas picture=picture label=label class=class /> }
}

/// The strip of real images; clicking one makes it x_0.
#[component]
pub fn DigitStrip(
    /// The images, each `[channels, size, size]` values in [−1, 1].
    digits: Vec<Vec<f32>>,
    /// What they are ("digit", "digits"; unset: "image", "images").
    #[prop(optional)]
    noun: ImageNoun,
    /// Index of the selected digit.
    selected: RwSignal<usize>,
    /// x_0, set on click.
    x0: RwSignal<Vec<f32>>,
) -> impl IntoView {
    let ImageNoun { one, many } = noun;
    let buttons = digits
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let pixels = Signal::derive({
                let d = d.clone();
                move || d.clone()
            });
            view! {
                <button class="thumb" class:selected=move || selected.get() == i aria-label=format!("{one} {i}")
                    on:click=move |_| { selected.set(i); x0.set(d.clone()); }>
                    <ImageView pixels=pixels label="a real example" class="thumb-canvas" />
                </button>
            }
        })
        .collect_view();
    view! { <div class="digit-strip" role="group" aria-label=format!("real {many}")>{buttons}</div> }
}

/// Paints a soft round white brush of radius ~1.5 px at (x, y) into an image of `image`'s shape in
/// [−1, 1] (every plane alike).
pub fn paint(pixels: &mut [f32], image: ImageShape, x: f64, y: f64) {
    let size = image.size;
    for plane in pixels.chunks_mut(size * size).take(image.channels) {
        for py in 0..size {
            for px in 0..size {
                let d2 = (px as f64 + 0.5 - x).powi(2) + (py as f64 + 0.5 - y).powi(2);
                let ink = (-d2 / 2.0).exp() as f32 * 2.0;
                let v = &mut plane[py * size + px];
                *v = (*v + ink).min(1.0);
            }
        }
    }
}

/// A canvas of the model's image size to draw x_0 on with the mouse or a finger.
#[component]
pub fn DrawPad(
    /// x_0, painted into.
    x0: RwSignal<Vec<f32>>,
) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let drawing = RwSignal::new(false);
    let image = PageState::expect().image;
    let picture = Signal::derive(move || Some(x0.with(|p| image.grid(p, 1, 0))));
    let stroke = move |ev: web_sys::PointerEvent| {
        let Some(c) = canvas.get() else { return };
        let rect = c.get_bounding_client_rect();
        if rect.width() <= 0.0 {
            return;
        }
        let x = (ev.client_x() as f64 - rect.left()) / rect.width() * image.size as f64;
        let y = (ev.client_y() as f64 - rect.top()) / rect.height() * image.size as f64;
        x0.update(|p| paint(p, image, x, y));
    };
    view! {
        <div class="draw-pad">
            // Pointer events bubble from the canvas to this wrapper.
            <div class="draw-surface"
                on:pointerdown=move |ev| { drawing.set(true); stroke(ev); }
                on:pointermove=move |ev| {
                    if drawing.get_untracked() {
                        stroke(ev)
                    }
                }
                on:pointerup=move |_| drawing.set(false)
                on:pointerleave=move |_| drawing.set(false)>
                <PictureCanvas picture=picture label="x_0: draw here" class="digit drawable" node_ref=canvas />
            </div>
            <button on:click=move |_| x0.set(vec![-1.0; image.values()])>"Clear (draw your own)"</button>
        </div>
    }
}

/// The timestep slider: a native range input with keyboard steps and a spoken value.
#[component]
pub fn TimestepSlider(
    /// The timestep.
    t: RwSignal<usize>,
    /// The schedule (for T and ᾱ_t in the spoken value).
    schedule: Memo<NoiseSchedule>,
) -> impl IntoView {
    let timesteps = move || schedule.with(|s| s.timesteps());
    let value_text = move || {
        let t = t.get();
        schedule.with(|s| {
            format!(
                "t = {t} of {}, ᾱ = {:.2}",
                s.timesteps(),
                s.alpha_bar[t.min(s.timesteps() - 1)]
            )
        })
    };
    view! {
        <label class="slider">
            <span>"Timestep t"</span>
            <input type="range" id="t-slider" min="0" max=move || (timesteps() - 1).to_string() step="1"
                prop:value=move || t.get().to_string()
                aria-valuetext=value_text
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<usize>() {
                        t.set(v);
                    }
                } />
            <output for="t-slider">{value_text}</output>
        </label>
    }
}

/// The forward-process panel.
#[component]
pub fn ForwardPanel(
    /// Real images to pick x_0 from.
    digits: Vec<Vec<f32>>,
    /// What they are ("digit", "digits"; unset: "image", "images").
    #[prop(optional)]
    noun: ImageNoun,
) -> impl IntoView {
    let PageState {
        digit,
        x0,
        t,
        schedule_kind,
        schedule,
        noise_seed,
        image,
        ..
    } = PageState::expect();
    let eps = Memo::new(move |_| forward_noise(noise_seed.get(), image));
    let x_t = Signal::derive(move || {
        let t = t.get();
        schedule.with(|s| x0.with(|x| eps.with(|e| q_sample_pixels(s, x, t.min(s.timesteps() - 1), e))))
    });
    let equation = Signal::derive(move || {
        schedule.with(|s| forward_equation(&s.row(t.get().min(s.timesteps() - 1)).expect("t clamped")))
    });
    let explain = move || {
        schedule.with(|s| {
            let (signal, noise) = s.q_sample_coefs(t.get().min(s.timesteps() - 1));
            format!(
                "At t = {} the image keeps √ᾱ_t = {signal:.3} of its contrast and carries Gaussian noise of standard deviation √(1−ᾱ_t) = {noise:.3}.",
                t.get()
            )
        })
    };
    view! {
        <section class="forward" aria-label="forward process">
            <h2>"Forward process q(x_t | x_0)"</h2>
            <p class="explain">
                "Diffusion destroys an image by adding a little Gaussian noise at each of T steps, β_t at step t. "
                "The steps compose into one: x_t can be drawn from x_0 directly ("<a href=DDPM_PAPER>"Ho et al. 2020"</a>", eq. 4), "
                "which is what makes training cheap. " {explain}
            </p>
            <Equation mathml=equation />
            <DigitStrip digits=digits noun=noun selected=digit x0=x0 />
            <div class="pair">
                <figure><DrawPad x0=x0 /><figcaption>"x_0"</figcaption></figure>
                <figure>
                    <ImageView pixels=x_t label="x_t, the noised image" class="digit forward-xt" />
                    <figcaption>"x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε"</figcaption>
                </figure>
            </div>
            <div class="slider-row">
                <PlayButton what="the timestep" every_ms=40
                    advance=move || {
                        let last = schedule.with_untracked(|s| s.timesteps() - 1);
                        // From the end, start over; one sweep takes about 100 frames (4 s).
                        let next = if t.get_untracked() >= last { 0 } else { (t.get_untracked() + last.div_ceil(100)).min(last) };
                        t.set(next);
                        next < last
                    } />
                <TimestepSlider t=t schedule=schedule />
            </div>
            <div class="controls">
                <label>"Schedule "
                    <select on:change=move |ev| {
                        if let Ok(k) = event_target_value(&ev).parse::<ScheduleKind>() { schedule_kind.set(k) }
                    } prop:value=move || schedule_kind.get().name().to_string()>
                        <option value="linear">"linear (Ho et al.)"</option>
                        <option value="cosine">"cosine (Nichol & Dhariwal)"</option>
                    </select>
                </label>
                <button on:click=move |_| noise_seed.update(|s| *s = s.wrapping_add(1))>"Resample ε"</button>
            </div>
            <SchedulePlot schedule=schedule t=t />
        </section>
    }
}
