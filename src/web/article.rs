//! The article around the pictures: each panel's equation in MathML, written as in the paper and
//! again with the live numbers substituted, a few sentences on what it means, and the sources.

use crate::diffusion::sampler::StepCoefs;
use crate::diffusion::schedule::ScheduleRow;
use leptos::prelude::*;

/// Ho, Jain & Abbeel (2020), Denoising Diffusion Probabilistic Models.
pub const DDPM_PAPER: &str = "https://arxiv.org/abs/2006.11239";
/// Song, Meng & Ermon (2021), Denoising Diffusion Implicit Models.
pub const DDIM_PAPER: &str = "https://arxiv.org/abs/2010.02502";
/// Meng et al. (2022), SDEdit.
pub const SDEDIT_PAPER: &str = "https://arxiv.org/abs/2108.01073";
/// Nichol & Dhariwal (2021), Improved DDPM (the cosine schedule).
pub const IMPROVED_DDPM_PAPER: &str = "https://arxiv.org/abs/2102.09672";
/// The authors' own code.
pub const DDPM_CODE: &str = "https://github.com/hojonathanho/diffusion";

/// A number as an equation shows it: four significant figures (scientific below 10⁻³).
pub fn num(v: f64) -> String {
    if v == 0.0 {
        "<mn>0</mn>".into()
    } else if v.abs() < 1e-3 {
        let e = v.abs().log10().floor() as i32;
        format!(
            "<mn>{:.3}</mn><mo>×</mo><msup><mn>10</mn><mn>{e}</mn></msup>",
            v / 10f64.powi(e)
        )
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("<mn>{v:.digits$}</mn>")
    }
}

fn sub(base: &str, index: &str) -> String {
    format!("<msub><mi>{base}</mi><mi>{index}</mi></msub>")
}

fn sqrt(inner: &str) -> String {
    format!("<msqrt>{inner}</msqrt>")
}

fn frac(num: &str, den: &str) -> String {
    format!("<mfrac><mrow>{num}</mrow><mrow>{den}</mrow></mfrac>")
}

fn row(parts: &[&str]) -> String {
    format!("<mrow>{}</mrow>", parts.concat())
}

fn math(rows: &[String]) -> String {
    let lines = rows
        .iter()
        .map(|r| format!("<mtr><mtd>{r}</mtd></mtr>"))
        .collect::<String>();
    format!(r#"<math display="block"><mtable columnalign="left">{lines}</mtable></math>"#)
}

fn alpha_bar(index: &str) -> String {
    format!("<msub><mover><mi>α</mi><mo>¯</mo></mover><mi>{index}</mi></msub>")
}

fn normal(var: &str, mean: &str, variance: &str) -> String {
    format!("<mi mathvariant=\"script\">N</mi><mo>(</mo>{var}<mo>;</mo>{mean}<mo>,</mo>{variance}<mi>𝐈</mi><mo>)</mo>")
}

/// Ho et al. eq. 4, q(x_t | x_0) = N(x_t; √ᾱ_t x_0, (1 − ᾱ_t) I), then with `row`'s numbers.
pub fn forward_equation(row_t: &ScheduleRow) -> String {
    let (xt, x0) = (sub("x", "t"), sub("x", "0"));
    let general = row(&[
        "<mi>q</mi><mo>(</mo>",
        &xt,
        "<mo>|</mo>",
        &x0,
        "<mo>)</mo><mo>=</mo>",
        &normal(
            &xt,
            &format!("{}{x0}", sqrt(&alpha_bar("t"))),
            &format!("<mo>(</mo><mn>1</mn><mo>−</mo>{}<mo>)</mo>", alpha_bar("t")),
        ),
    ]);
    let numbers = row(&[
        "<mo>=</mo>",
        &normal(
            &xt,
            &format!("{}{x0}", num(row_t.sqrt_alpha_bar)),
            &num(1.0 - row_t.alpha_bar),
        ),
    ]);
    math(&[general, numbers])
}

/// Ho et al. eqs. 6–7: the forward posterior q(x_{t−1} | x_t, x_0), its mean's two coefficients and
/// β̃_t, then with `row`'s numbers.
pub fn posterior_equation(row_t: &ScheduleRow) -> String {
    let (xt, x0, xp) = (sub("x", "t"), sub("x", "0"), sub("x", "t−1"));
    let beta = sub("β", "t");
    let one_minus = |i: &str| format!("<mn>1</mn><mo>−</mo>{}", alpha_bar(i));
    let mu = "<msub><mover><mi>μ</mi><mo>~</mo></mover><mi>t</mi></msub>";
    let beta_tilde = "<msub><mover><mi>β</mi><mo>~</mo></mover><mi>t</mi></msub>";
    let general = row(&[
        "<mi>q</mi><mo>(</mo>",
        &xp,
        "<mo>|</mo>",
        &xt,
        "<mo>,</mo>",
        &x0,
        "<mo>)</mo><mo>=</mo>",
        &normal(&xp, mu, beta_tilde),
    ]);
    let mean = row(&[
        mu,
        "<mo>=</mo>",
        &frac(&format!("{}{beta}", sqrt(&alpha_bar("t−1"))), &one_minus("t")),
        &x0,
        "<mo>+</mo>",
        &frac(
            &format!("{}<mo>(</mo>{}<mo>)</mo>", sqrt(&sub("α", "t")), one_minus("t−1")),
            &one_minus("t"),
        ),
        &xt,
        "<mo>=</mo>",
        &num(row_t.posterior_mean_coef1),
        &x0,
        "<mo>+</mo>",
        &num(row_t.posterior_mean_coef2),
        &xt,
    ]);
    let variance = row(&[
        beta_tilde,
        "<mo>=</mo>",
        &frac(&one_minus("t−1"), &one_minus("t")),
        &beta,
        "<mo>=</mo>",
        &num(row_t.posterior_variance),
    ]);
    math(&[general, mean, variance])
}

/// The reverse step in the paper's form with the step's numbers: Ho et al. eq. 11 (Algorithm 2,
/// line 4) for a DDPM step, Song et al. eq. 12 for a DDIM step (`c.c_xt == 0`).
pub fn step_equation(c: &StepCoefs) -> String {
    let (xt, xp) = (sub("x", "t"), sub("x", "t−1"));
    let eps = "<msub><mover><mi>ε</mi><mo>^</mo></mover><mi>θ</mi></msub>";
    let x0_hat = "<msub><mover><mi>x</mi><mo>^</mo></mover><mn>0</mn></msub>";
    let sigma_z = format!("<mo>+</mo>{}<mi>𝐳</mi>", sub("σ", "t"));
    if c.c_xt == 0.0 {
        // DDIM: x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z.
        let general = row(&[
            &xp,
            "<mo>=</mo>",
            &sqrt(&alpha_bar("t−1")),
            x0_hat,
            "<mo>+</mo>",
            &sqrt(&format!(
                "<mn>1</mn><mo>−</mo>{}<mo>−</mo><msubsup><mi>σ</mi><mi>t</mi><mn>2</mn></msubsup>",
                alpha_bar("t−1")
            )),
            eps,
            &sigma_z,
        ]);
        let numbers = row(&[
            "<mo>=</mo>",
            &num(c.c_x0),
            x0_hat,
            "<mo>+</mo>",
            &num(c.c_eps),
            eps,
            "<mo>+</mo>",
            &num(c.sigma),
            "<mi>𝐳</mi>",
        ]);
        math(&[general, numbers])
    } else {
        // DDPM: x_{t−1} = 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε̂) + σ_t z, with α_t = ᾱ_t / ᾱ_{t−1}.
        let alpha = c.alpha_bar / c.alpha_bar_prev;
        let general = row(&[
            &xp,
            "<mo>=</mo>",
            &frac("<mn>1</mn>", &sqrt(&sub("α", "t"))),
            "<mo>(</mo>",
            &xt,
            "<mo>−</mo>",
            &frac(
                &sub("β", "t"),
                &sqrt(&format!("<mn>1</mn><mo>−</mo>{}", alpha_bar("t"))),
            ),
            eps,
            "<mo>)</mo>",
            &sigma_z,
        ]);
        let numbers = row(&[
            "<mo>=</mo>",
            &num(1.0 / alpha.sqrt()),
            "<mo>(</mo>",
            &xt,
            "<mo>−</mo>",
            &num((1.0 - alpha) / (1.0 - c.alpha_bar).sqrt()),
            eps,
            "<mo>)</mo><mo>+</mo>",
            &num(c.sigma),
            "<mi>𝐳</mi>",
        ]);
        math(&[general, numbers])
    }
}

/// Classifier-free guidance (Ho & Salimans 2022, eq. 6) for class `class` at scale `w`, and again
/// with the numbers: ε̃ = (1 + w) ε̂(x_t, c) − w ε̂(x_t, ∅).
pub fn guidance_equation(class: &str, w: f64) -> String {
    let eps = |c: &str| {
        format!(
            "<msub><mover><mi>ε</mi><mo>^</mo></mover><mi>θ</mi></msub><mo>(</mo><msub><mi>x</mi><mi>t</mi></msub><mo>,</mo>{c}<mo>)</mo>"
        )
    };
    let tilde = "<msub><mover><mi>ε</mi><mo>~</mo></mover><mi>θ</mi></msub>";
    let general = row(&[
        tilde,
        "<mo>=</mo><mo>(</mo><mn>1</mn><mo>+</mo><mi>w</mi><mo>)</mo>",
        &eps("<mi>c</mi>"),
        "<mo>−</mo><mi>w</mi>",
        &eps("<mi>∅</mi>"),
    ]);
    let numbers = row(&[
        "<mo>=</mo>",
        &num(1.0 + w),
        &eps(&format!("<mtext>“{}”</mtext>", escape(class))),
        "<mo>−</mo>",
        &num(w),
        &eps("<mi>∅</mi>"),
    ]);
    math(&[general, numbers])
}

/// `text` with the characters markup gives a meaning escaped (class names come from config.json).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Ho & Salimans (2022), Classifier-Free Diffusion Guidance.
pub const CFG_PAPER: &str = "https://arxiv.org/abs/2207.12598";

/// A MathML equation (made by one of this module's functions), redrawn when it changes.
#[component]
pub fn Equation(
    /// The `<math>` element's markup.
    #[prop(into)]
    mathml: Signal<String>,
) -> impl IntoView {
    view! { <div class="equation" inner_html=move || mathml.get()></div> }
}
