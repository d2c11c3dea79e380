//! `ddpm schedule`: the noise schedule's numbers as a table or JSON.

use anyhow::Result;
use clap::Args;
use ddpm_explorer::diffusion::schedule::{DEFAULT_TIMESTEPS, NoiseSchedule, ScheduleKind, ScheduleRow};

#[derive(Args, Debug)]
pub(crate) struct ScheduleArgs {
    /// linear or cosine.
    #[arg(long, default_value = "linear")]
    schedule: ScheduleKind,
    /// T.
    #[arg(long, default_value_t = DEFAULT_TIMESTEPS)]
    timesteps: usize,
    /// Timesteps to print, comma-separated (default: a spread over 0..T).
    #[arg(long, value_delimiter = ',')]
    t: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `schedule --json` output.
#[derive(serde::Serialize)]
struct ScheduleJson {
    schedule: ScheduleKind,
    timesteps: usize,
    rows: Vec<ScheduleRow>,
}

pub(crate) fn run(a: ScheduleArgs) -> Result<()> {
    let schedule = NoiseSchedule::new(a.schedule, a.timesteps)?;
    let ts = if a.t.is_empty() {
        let last = a.timesteps - 1;
        let mut v: Vec<usize> = [0, 1, 10, 100, 250, 500, 750, 999]
            .into_iter()
            .filter(|&t| t < last)
            .collect();
        v.push(last);
        v
    } else {
        a.t.clone()
    };
    let rows = ts.iter().map(|&t| schedule.row(t)).collect::<Result<Vec<_>, _>>()?;
    if a.json {
        let out = ScheduleJson {
            schedule: a.schedule,
            timesteps: a.timesteps,
            rows,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{} schedule, T = {}", a.schedule, a.timesteps);
        println!(
            "{:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "t", "beta", "alpha_bar", "sqrt_ab", "sqrt_1-ab", "beta_tilde", "coef1", "coef2", "snr"
        );
        for r in rows {
            println!(
                "{:>5} {:>11.4e} {:>11.6} {:>11.6} {:>11.6} {:>11.4e} {:>11.6} {:>11.6} {:>11.4e}",
                r.t,
                r.beta,
                r.alpha_bar,
                r.sqrt_alpha_bar,
                r.sqrt_one_minus_alpha_bar,
                r.posterior_variance,
                r.posterior_mean_coef1,
                r.posterior_mean_coef2,
                r.snr
            );
        }
    }
    Ok(())
}
