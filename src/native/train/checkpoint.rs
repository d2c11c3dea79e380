//! A run's folder: checkpoints written all-or-nothing, the exported model, the loss log and chart.

use super::{TrainConfig, TrainError, io_err};
use crate::model::UNet;
use crate::model::weights::{CONFIG_FILE, DiffusionConfig, WEIGHTS_FILE, check_finite, unet_to_bytes};
use crate::native::io::{sync_dir, write_atomic, write_synced};
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The checkpoint's own bookkeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub(super) step: usize,
    pub(super) config: TrainConfig,
}

/// The recipe recorded in the latest checkpoint of the run folder `out` (what `train --resume`
/// continues), or `None` when the folder has no checkpoint.
pub fn checkpoint_config(out: &Path) -> Result<Option<TrainConfig>, TrainError> {
    let Some(dir) = RunDir::new(out).resumable() else {
        return Ok(None);
    };
    read_checkpoint_state(&dir).map(|state| Some(state.config))
}

/// The step of the latest checkpoint in the run folder `out` (what `train --resume` continues
/// from), or `None` when the folder has no checkpoint.
pub fn checkpoint_step(out: &Path) -> Result<Option<usize>, TrainError> {
    let Some(dir) = RunDir::new(out).resumable() else {
        return Ok(None);
    };
    read_checkpoint_state(&dir).map(|state| Some(state.step))
}

pub(super) fn read_checkpoint_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    let err = |reason: String| TrainError::Resume {
        path: dir.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(dir.join("state.json")).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("state.json: {e}")))
}

/// A run folder held by one training process: `train.lock` holds its process id, and is removed
/// when the run ends. A second run in the same folder is refused while that process lives; a
/// lock left by a killed process (its id no longer running) is taken over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of the run folder `out` (created if needed).
    pub fn acquire(out: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(out).map_err(io_err(format!("creating {}", out.display())))?;
        let path = out.join("train.lock");
        let me = std::process::id();
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    use std::io::Write;
                    writeln!(file, "{me}")
                        .and_then(|_| file.sync_all())
                        .map_err(io_err("writing train.lock"))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    if let Some(pid) = holder
                        && pid != me
                        && process_is_alive(pid)
                    {
                        return Err(TrainError::Busy {
                            out: out.to_path_buf(),
                            pid,
                        });
                    }
                    // Stale: its process is gone (or the file is unreadable half-written).
                    std::fs::remove_file(&path).map_err(io_err("removing a stale train.lock"))?;
                }
                Err(e) => return Err(io_err("creating train.lock")(e)),
            }
        }
        Err(TrainError::Settings(format!(
            "could not take {}: another run is taking it at the same moment",
            path.display()
        )))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a process with this id runs (signal 0 checks without sending anything).
fn process_is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Paths inside a run's output folder.
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run folder.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    /// The latest complete checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    fn checkpoint_tmp(&self) -> PathBuf {
        self.root.join("checkpoint.tmp")
    }
    fn checkpoint_old(&self) -> PathBuf {
        self.root.join("checkpoint.old")
    }
    /// The exported EMA model (what the web app ships).
    pub fn export(&self) -> PathBuf {
        self.root.join("export")
    }
    /// Sample grids.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    /// The loss curve.
    pub fn loss_csv(&self) -> PathBuf {
        self.root.join("loss.csv")
    }
    /// The loss curve as a picture.
    pub fn loss_svg(&self) -> PathBuf {
        self.root.join("loss.svg")
    }
    /// The checkpoint to resume from: the complete one, or the previous one if a crash hit
    /// between the two renames of [`save_checkpoint`].
    pub(super) fn resumable(&self) -> Option<PathBuf> {
        [self.checkpoint(), self.checkpoint_old()]
            .into_iter()
            .find(|p| p.join("state.json").is_file())
    }
}

/// Writes a checkpoint (model, EMA, optimiser, step) so that it is either wholly there or not:
/// everything goes to `checkpoint.tmp/`, which then replaces `checkpoint/` by renames.
pub(super) fn save_checkpoint(
    run: &RunDir,
    model: &UNet,
    ema: &UNet,
    optim: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<(), TrainError> {
    let tmp = run.checkpoint_tmp();
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err("clearing checkpoint.tmp"))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err("creating checkpoint.tmp"))?;
    let (model_bytes, ema_bytes) = (unet_to_bytes(model.clone())?, unet_to_bytes(ema.clone())?);
    // Never a non-finite checkpoint: the last good one stays.
    check_finite(&model_bytes)?;
    check_finite(&ema_bytes)?;
    write_synced(&tmp.join("model.bpk"), &model_bytes).map_err(io_err("writing model.bpk"))?;
    write_synced(&tmp.join("ema.bpk"), &ema_bytes).map_err(io_err("writing ema.bpk"))?;
    let optim_bytes = optim
        .into_bytes()
        .map_err(|e| TrainError::Settings(format!("saving the optimiser: {e}")))?;
    write_synced(&tmp.join("optim.bpk"), &optim_bytes[..]).map_err(io_err("writing optim.bpk"))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    write_synced(&tmp.join("state.json"), json.as_bytes()).map_err(io_err("writing state.json"))?;
    // The files and the folder's entries are on the disk before the folder takes the name
    // `checkpoint`; each rename is flushed before the next step.
    sync_dir(&tmp).map_err(io_err("flushing checkpoint.tmp"))?;
    let (cur, old) = (run.checkpoint(), run.checkpoint_old());
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err("removing checkpoint.old"))?;
    }
    if cur.exists() {
        std::fs::rename(&cur, &old).map_err(io_err("rotating checkpoint"))?;
        sync_dir(&run.root).map_err(io_err("flushing the run folder"))?;
    }
    std::fs::rename(&tmp, &cur).map_err(io_err("publishing checkpoint"))?;
    sync_dir(&run.root).map_err(io_err("flushing the run folder"))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err("removing checkpoint.old"))?;
    }
    Ok(())
}

/// Writes a model folder — burnpack `weights` and `config.json` — to `dir`, each file atomically:
/// what a run exports, `ddpm export` copies and the web app loads.
pub fn export_model(dir: &Path, config: &DiffusionConfig, weights: &[u8]) -> Result<(), TrainError> {
    check_finite(weights)?;
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    write_atomic(&dir.join(WEIGHTS_FILE), weights).map_err(io_err("writing the exported weights"))?;
    write_atomic(&dir.join(CONFIG_FILE), config.to_json().as_bytes()).map_err(io_err("writing config.json"))?;
    Ok(())
}

/// `loss.csv` contents without the lines logged after `step` (the header is kept).
pub(super) fn loss_csv_up_to(csv: &str, step: usize) -> String {
    csv.lines()
        .enumerate()
        .filter(|(i, line)| {
            *i == 0
                || line
                    .split(',')
                    .next()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .is_some_and(|s| s <= step)
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect()
}

/// Draws `loss.csv` as `loss.svg` beside it.
pub fn write_loss_plot(run: &RunDir) -> Result<(), TrainError> {
    let csv = std::fs::read_to_string(run.loss_csv()).map_err(io_err("reading loss.csv"))?;
    let (svg, _) = crate::native::plot::loss_chart(&csv, 20);
    write_atomic(&run.loss_svg(), svg.as_bytes()).map_err(io_err("writing loss.svg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_drops_losses_logged_after_the_checkpoint() {
        let csv = "step,loss,lr\n25,0.5,1e-4\n50,0.4,1e-4\n75,0.3,1e-4\n";
        assert_eq!(loss_csv_up_to(csv, 50), "step,loss,lr\n25,0.5,1e-4\n50,0.4,1e-4\n");
        assert_eq!(loss_csv_up_to(csv, 100), csv);
        assert_eq!(loss_csv_up_to(csv, 0), "step,loss,lr\n");
    }
}
