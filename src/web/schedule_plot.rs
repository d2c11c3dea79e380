//! The page's line plots: framed axes with ticks and titles ([`Axes`]), the schedule plot (ᾱ_t and
//! log SNR over t, the slider's t marked) and the comparison's difference plot use it.

use crate::diffusion::schedule::NoiseSchedule;
use leptos::prelude::*;

/// Plot area, in SVG units.
const W: f64 = 300.0;
const H: f64 = 110.0;
/// Room for the left axis (ticks and title), the right one, the top, and the bottom.
const LEFT: f64 = 38.0;
const RIGHT: f64 = 46.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 30.0;

/// One axis: its range, where its ticks go and its title.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The value at the start (left or bottom) of the axis.
    pub from: f64,
    /// The value at the end (right or top).
    pub to: f64,
    /// Tick values, labelled as printed by `{}`.
    pub ticks: Vec<f64>,
    /// The axis title.
    pub title: &'static str,
}

impl Axis {
    /// Where `v` falls along the axis, 0 at `from` and 1 at `to`, clamped.
    pub fn fraction(&self, v: f64) -> f64 {
        ((v - self.from) / (self.to - self.from)).clamp(0.0, 1.0)
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + self.fraction(v) * W
    }

    fn y(&self, v: f64) -> f64 {
        TOP + H - self.fraction(v) * H
    }
}

/// Polyline points of `(x, y)` pairs on the `x` and `y` axes.
pub fn polyline(x: &Axis, y: &Axis, points: impl IntoIterator<Item = (f64, f64)>) -> String {
    points
        .into_iter()
        .map(|(u, v)| format!("{:.1},{:.1}", x.x(u), y.y(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tick label: whole numbers without a decimal point.
fn tick_label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// A framed plot with ticks and titles on the bottom, left and (optionally) right axes; `children`
/// draws inside it, using [`polyline`] with the same axes.
#[component]
pub fn Axes(
    /// The horizontal axis.
    x: Axis,
    /// The left axis.
    y: Axis,
    /// A second vertical axis on the right, for a second curve.
    #[prop(optional)]
    y2: Option<Axis>,
    /// Accessible description of the plot.
    label: String,
    /// CSS class of the `<svg>`.
    class: &'static str,
    /// The curves and markers.
    children: Children,
) -> impl IntoView {
    let bottom = TOP + H;
    let x_ticks = x
        .ticks
        .iter()
        .map(|&v| {
            let px = x.x(v);
            view! {
                <line x1=px x2=px y1=bottom y2=bottom + 3.0 class="tick" />
                <text x=px y=bottom + 12.0 class="tick-label" text-anchor="middle">{tick_label(v)}</text>
            }
        })
        .collect_view();
    let vertical = |axis: &Axis, right: bool| {
        let (edge, dir, anchor) = if right {
            (LEFT + W, 1.0, "start")
        } else {
            (LEFT, -1.0, "end")
        };
        axis.ticks
            .iter()
            .map(|&v| {
                let py = axis.y(v);
                view! {
                    <line x1=edge x2=edge + 3.0 * dir y1=py y2=py class="tick" />
                    <text x=edge + 5.0 * dir y=py + 3.0 class="tick-label" text-anchor=anchor>{tick_label(v)}</text>
                }
            })
            .collect_view()
    };
    let y_ticks = vertical(&y, false);
    let y2_ticks = y2.as_ref().map(|a| vertical(a, true));
    let y2_title = y2.as_ref().map(|a| {
        let (px, py) = (LEFT + W + RIGHT - 8.0, TOP + H / 2.0);
        view! { <text x=px y=py class="axis-title" text-anchor="middle" transform=format!("rotate(90 {px} {py})")>{a.title}</text> }
    });
    let (ty_x, ty_y) = (10.0, TOP + H / 2.0);
    view! {
        <svg class=class viewBox=format!("0 0 {} {}", LEFT + W + RIGHT, TOP + H + BOTTOM) role="img" aria-label=label>
            <rect x=LEFT y=TOP width=W height=H class="plot-frame" />
            {children()}
            {x_ticks}
            {y_ticks}
            {y2_ticks}
            <text x=LEFT + W / 2.0 y=bottom + 25.0 class="axis-title" text-anchor="middle">{x.title}</text>
            <text x=ty_x y=ty_y class="axis-title" text-anchor="middle" transform=format!("rotate(-90 {ty_x} {ty_y})")>{y.title}</text>
            {y2_title}
        </svg>
    }
}

/// Samples of `0..timesteps` for a curve (about 150 points, the last t included).
fn sample_ts(timesteps: usize) -> impl Iterator<Item = usize> {
    (0..timesteps)
        .step_by((timesteps / 150).max(1))
        .chain(std::iter::once(timesteps - 1))
}

/// ᾱ_t (solid, left axis) and log₁₀ SNR (dashed, right axis) against t, with a marker at `t`.
#[component]
pub fn SchedulePlot(
    /// The schedule to draw.
    schedule: Memo<NoiseSchedule>,
    /// The marked timestep.
    t: RwSignal<usize>,
) -> impl IntoView {
    let timesteps = schedule.with_untracked(|s| s.timesteps());
    let last = (timesteps - 1) as f64;
    let x = Axis {
        from: 0.0,
        to: last,
        ticks: vec![
            0.0,
            (timesteps / 4) as f64,
            (timesteps / 2) as f64,
            (3 * timesteps / 4) as f64,
            last,
        ],
        title: "timestep t",
    };
    let y = Axis {
        from: 0.0,
        to: 1.0,
        ticks: vec![0.0, 0.5, 1.0],
        title: "ᾱ_t (solid)",
    };
    let y2 = Axis {
        from: -5.0,
        to: 4.0,
        ticks: vec![-4.0, -2.0, 0.0, 2.0, 4.0],
        title: "log₁₀ SNR (dashed)",
    };
    let alpha_bar = {
        let (x, y) = (x.clone(), y.clone());
        move || schedule.with(|s| polyline(&x, &y, sample_ts(s.timesteps()).map(|t| (t as f64, s.alpha_bar[t]))))
    };
    let log_snr = {
        let (x, y2) = (x.clone(), y2.clone());
        move || schedule.with(|s| polyline(&x, &y2, sample_ts(s.timesteps()).map(|t| (t as f64, s.snr(t).log10()))))
    };
    let marker = {
        let x = x.clone();
        move || format!("{:.1}", x.x(t.get() as f64))
    };
    let marker2 = marker.clone();
    view! {
        <Axes x=x y=y y2=y2 label="ᾱ_t and log₁₀ SNR against t".to_string() class="schedule-plot">
            <polyline points=alpha_bar class="curve alpha-bar" />
            <polyline points=log_snr class="curve snr" />
            <line x1=marker x2=marker2 y1=TOP y2=TOP + H class="marker" />
        </Axes>
    }
}
