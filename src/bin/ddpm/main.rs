//! `ddpm`: train, sample and inspect the DDPM of this crate from the command line. One file per
//! subcommand, each holding its flags and its printing; the work is done by the library.

mod classifier;
mod eval;
mod export;
mod plot_loss;
mod sample;
mod schedule;
mod train;

use clap::{Parser, Subcommand};

/// Denoising Diffusion Probabilistic Models you can watch and touch.
#[derive(Parser, Debug)]
#[command(name = "ddpm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the U-Net on MNIST, another IDX set or a folder of images, on one device or several.
    Train(Box<train::TrainArgs>),
    /// Generate images with trained weights (DDPM or DDIM, guided by a class).
    Sample(sample::SampleArgs),
    /// Print the noise schedule's numbers (β, ᾱ, posterior coefficients, SNR).
    Schedule(schedule::ScheduleArgs),
    /// Copy a trained model (config.json + model.bpk) to a folder, optionally in half precision.
    Export(export::ExportArgs),
    /// Train the classifier that judges `eval` (on any labelled set) and report its held-out accuracy.
    Classifier(classifier::ClassifierArgs),
    /// Judge trained weights: sample quality in the classifier's eyes and the likelihood bound.
    Eval(eval::EvalArgs),
    /// Draw a run's loss.csv as an SVG chart.
    PlotLoss(plot_loss::PlotLossArgs),
}

fn main() {
    ddpm_explorer::native::allocator::keep_freed_buffers();
    ddpm_explorer::native::device::quiet_vulkan_device_select();
    let cli = Cli::parse();
    let result = ddpm_explorer::native::threads::on_worker_threads(|| match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::Schedule(a) => schedule::run(a),
        Command::Export(a) => export::run(a),
        Command::Classifier(a) => classifier::run(a),
        Command::Eval(a) => eval::run(a),
        Command::PlotLoss(a) => plot_loss::run(a),
    });
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            // One line: the error and its context chain.
            eprintln!("error: {e:#}");
            1
        }
    };
    ddpm_explorer::native::device::exit_without_handlers(code);
}
