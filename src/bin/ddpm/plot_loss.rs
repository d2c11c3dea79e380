//! `ddpm plot-loss`: a run's loss.csv as an SVG chart.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct PlotLossArgs {
    /// The run's loss.csv.
    #[arg(long, default_value = "runs/mnist/loss.csv")]
    csv: PathBuf,
    /// SVG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Logged values in the moving average.
    #[arg(long, default_value_t = 20)]
    window: usize,
}

pub(crate) fn run(a: PlotLossArgs) -> Result<()> {
    let csv = std::fs::read_to_string(&a.csv).with_context(|| format!("reading '{}'", a.csv.display()))?;
    let (svg, points) = ddpm_explorer::native::plot::loss_chart(&csv, a.window);
    if points == 0 {
        bail!("'{}' holds no losses (expected lines of step,loss,lr)", a.csv.display());
    }
    ddpm_explorer::native::io::write_atomic(&a.out, svg.as_bytes())
        .with_context(|| format!("writing '{}'", a.out.display()))?;
    eprintln!("wrote {} ({points} points)", a.out.display());
    Ok(())
}
