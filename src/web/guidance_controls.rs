//! The class picker and the guidance slider of a class-conditional model, beside the reverse chain.

use super::article::{CFG_PAPER, Equation, guidance_equation};
use super::state::PageState;
use crate::view_state::PAGE_MAX_GUIDANCE;
use leptos::prelude::*;

/// The class picker and the guidance slider of a class-conditional model, with what guidance does
/// and its equation live.
#[component]
pub fn GuidanceControls(
    /// The model's class names, in label order.
    names: Vec<String>,
) -> impl IntoView {
    let PageState {
        class, guidance, busy, ..
    } = PageState::expect();
    let options = names
        .iter()
        .enumerate()
        .map(
            |(i, n)| view! { <option value=i.to_string() selected=move || class.get() == Some(i)>{n.clone()}</option> },
        )
        .collect_view();
    let name_of = {
        let names = names.clone();
        move |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string())
    };
    let equation = Signal::derive(move || {
        let w = guidance.get();
        class
            .get()
            .map(|c| guidance_equation(&name_of(c), w))
            .unwrap_or_default()
    });
    view! {
        <div class="guidance">
            <p class="explain">
                "This model was trained with each image’s class and, for a random share of them, without it (“∅”). "
                <b>"Classifier-free guidance"</b>" (Ho & Salimans 2022) asks it both ways at every step and pushes the "
                "prediction away from the unconditional one: w = 0 is the conditional model itself, larger w gives samples "
                "that look more like their class and less like each other. Both passes run as one batch of 32."
            </p>
            <div class="controls">
                <label>"class "
                    <select class="class-picker" disabled=move || busy.get()
                        on:change=move |ev| class.set(event_target_value(&ev).parse::<usize>().ok())>
                        <option value="any" selected=move || class.get().is_none()>"any (no class)"</option>
                        {options}
                    </select>
                </label>
                <label>"guidance w "
                    <input type="range" class="guidance-slider" min="0" max=PAGE_MAX_GUIDANCE.to_string() step="0.5"
                        disabled=move || busy.get() || class.get().is_none()
                        prop:value=move || guidance.get().to_string()
                        aria-valuetext=move || format!("w = {}", guidance.get())
                        on:input=move |ev| {
                            if let Ok(w) = event_target_value(&ev).parse::<f64>() {
                                guidance.set(w.clamp(0.0, PAGE_MAX_GUIDANCE))
                            }
                        } />
                    <output class="guidance-value">{move || format!(" {:.1}", guidance.get())}</output>
                </label>
            </div>
            <Equation mathml=equation />
            <p class="sources">"Source: " <a href=CFG_PAPER>"Ho & Salimans 2022"</a> " (eq. 6); here: " <code>"src/diffusion/sampler/guidance.rs"</code> "."</p>
        </div>
    }
}
