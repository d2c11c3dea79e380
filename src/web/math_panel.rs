//! The mathematics beside the pictures: the forward process's numbers at the slider's t and the
//! coefficients of the reverse step being taken.

use super::article::{Equation, IMPROVED_DDPM_PAPER, posterior_equation};
use super::state::PageState;
use crate::diffusion::sampler::StepCoefs;
use leptos::prelude::*;

fn fmt(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.4e}")
    } else {
        format!("{v:.5}")
    }
}

/// One labelled number with the formula it comes from.
#[component]
fn Quantity(
    /// Symbol, e.g. "ᾱ_t".
    symbol: &'static str,
    /// Formula in the seeds' notation.
    formula: &'static str,
    /// The value, live.
    value: Signal<String>,
) -> impl IntoView {
    view! {
        <tr>
            <th scope="row">{symbol}</th>
            <td class="value" data-symbol=symbol>{value}</td>
            <td class="formula">{formula}</td>
        </tr>
    }
}

/// The forward-process numbers at `t` and, while a chain runs, the current reverse step's.
#[component]
pub fn MathPanel() -> impl IntoView {
    let PageState { schedule, t, step, .. } = PageState::expect();
    let row = move || schedule.with(|s| s.row(t.get().min(s.timesteps() - 1)).expect("t clamped"));
    let q = move |f: fn(&crate::diffusion::schedule::ScheduleRow) -> f64| Signal::derive(move || fmt(f(&row())));
    let r =
        move |f: fn(&StepCoefs) -> f64| Signal::derive(move || step.get().map(|c| fmt(f(&c))).unwrap_or("–".into()));
    let posterior = Signal::derive(move || posterior_equation(&row()));
    view! {
        <section class="math" aria-label="the mathematics">
            <h2>"Forward process at t = " {move || t.get()}</h2>
            <p class="explain">
                "Every number below follows from the βs alone. Given x_0, the step back from x_t is itself Gaussian "
                "(Ho et al. eqs. 6–7): the reverse process learns to imitate this posterior without knowing x_0, "
                "by putting the U-Net's x̂_0 in its place. β̃_t is its variance; the SNR ᾱ_t/(1−ᾱ_t) says how much "
                "signal is left ("<a href=IMPROVED_DDPM_PAPER>"the cosine schedule"</a>" spends more of T at middling SNR)."
            </p>
            <Equation mathml=posterior />
            <table>
                <Quantity symbol="β_t" formula="noise variance added at step t" value=q(|r| r.beta) />
                <Quantity symbol="ᾱ_t" formula="∏_{s≤t} (1 − β_s)" value=q(|r| r.alpha_bar) />
                <Quantity symbol="√ᾱ_t" formula="x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε" value=q(|r| r.sqrt_alpha_bar) />
                <Quantity symbol="√(1−ᾱ_t)" formula="noise scale of q(x_t | x_0)" value=q(|r| r.sqrt_one_minus_alpha_bar) />
                <Quantity symbol="SNR" formula="ᾱ_t / (1 − ᾱ_t)" value=q(|r| r.snr) />
                <Quantity symbol="β̃_t" formula="(1−ᾱ_{t−1}) / (1−ᾱ_t) · β_t" value=q(|r| r.posterior_variance) />
                <Quantity symbol="coef1" formula="√ᾱ_{t−1} β_t / (1−ᾱ_t)  (× x_0 in μ̃_t)" value=q(|r| r.posterior_mean_coef1) />
                <Quantity symbol="coef2" formula="√α_t (1−ᾱ_{t−1}) / (1−ᾱ_t)  (× x_t in μ̃_t)" value=q(|r| r.posterior_mean_coef2) />
            </table>
            <h2>"Reverse step " {move || step.get().map(|c| format!("t = {} → {}", c.t, c.prev_t.map_or("x_0".to_string(), |p| p.to_string()))).unwrap_or_default()}</h2>
            <p class="explain">"On the model's own schedule; a DDPM step has c_ε = 0, a DDIM step c_xt = 0."</p>
            <p class="formula">"x̂_0 = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂;  x_{t−1} = c_x0 · x̂_0 + c_xt · x_t + c_ε · ε̂ + σ_t z"</p>
            <table>
                <Quantity symbol="ᾱ_t" formula="at the step's t" value=r(|c| c.alpha_bar) />
                <Quantity symbol="c_x0" formula="DDPM: coef1; DDIM: √ᾱ_prev" value=r(|c| c.c_x0) />
                <Quantity symbol="c_xt" formula="DDPM: coef2; DDIM: 0" value=r(|c| c.c_xt) />
                <Quantity symbol="c_ε" formula="DDPM: 0; DDIM: √(1 − ᾱ_prev − σ_t²)" value=r(|c| c.c_eps) />
                <Quantity symbol="σ_t" formula="√β_t, √β̃_t, or η·√β̃-like (DDIM); 0 on the last step" value=r(|c| c.sigma) />
            </table>
        </section>
    }
}
