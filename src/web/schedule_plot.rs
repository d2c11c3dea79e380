//! A small SVG plot of ᾱ_t and log SNR over t, with the current t marked.

use crate::diffusion::schedule::NoiseSchedule;
use leptos::prelude::*;

const W: f64 = 300.0;
const H: f64 = 110.0;

/// Polyline points of `f(t)` scaled to the plot, `f` already in [0, 1].
fn polyline(timesteps: usize, f: impl Fn(usize) -> f64) -> String {
    let stride = (timesteps / 150).max(1);
    (0..timesteps)
        .step_by(stride)
        .chain(std::iter::once(timesteps - 1))
        .map(|t| {
            let x = t as f64 / (timesteps - 1).max(1) as f64 * W;
            let y = H - f(t).clamp(0.0, 1.0) * H;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// ᾱ_t (solid) and log₁₀ SNR mapped from [−5, 4] (dashed) against t, with a marker at `t`.
#[component]
pub fn SchedulePlot(
    /// The schedule to draw.
    schedule: Memo<NoiseSchedule>,
    /// The marked timestep.
    t: RwSignal<usize>,
) -> impl IntoView {
    let alpha_bar = move || schedule.with(|s| polyline(s.timesteps(), |t| s.alpha_bar[t]));
    let log_snr = move || schedule.with(|s| polyline(s.timesteps(), |t| (s.snr(t).log10() + 5.0) / 9.0));
    let marker_x = move || {
        let n = schedule.with(|s| s.timesteps());
        format!("{:.1}", t.get() as f64 / (n - 1).max(1) as f64 * W)
    };
    view! {
        <svg class="schedule-plot" viewBox=format!("-2 -4 {} {}", W + 4.0, H + 22.0) role="img"
            aria-label="alpha-bar and log SNR against t">
            <rect x="0" y="0" width=W height=H class="plot-frame" />
            <polyline points=alpha_bar class="curve alpha-bar" />
            <polyline points=log_snr class="curve snr" />
            <line x1=marker_x x2=marker_x y1="0" y2=H class="marker" />
            <text x="2" y=H + 14.0 class="legend">"— ᾱ_t   - - log₁₀ SNR (−5…4)"</text>
        </svg>
    }
}
