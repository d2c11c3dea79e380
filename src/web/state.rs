//! The page's state: one set of signals that every panel reads from Leptos' context, as leptos'
//! own examples share state, instead of threading half a dozen signals through each panel.

use crate::diffusion::sampler::{Guidance, SamplerConfig, StepCoefs};
use crate::diffusion::schedule::{NoiseSchedule, ScheduleKind};
use crate::image::ImageShape;
use crate::view_state::ViewState;
use leptos::prelude::*;

/// Everything the panels share. `Copy`: signals are handles.
#[derive(Clone, Copy)]
pub struct PageState {
    /// The shape of the model's images.
    pub image: ImageShape,
    /// Index of the chosen real digit.
    pub digit: RwSignal<usize>,
    /// x_0 (a real image or a drawing), `image.values()` values in [−1, 1].
    pub x0: RwSignal<Vec<f32>>,
    /// The forward panel's timestep (SDEdit starts there).
    pub t: RwSignal<usize>,
    /// Which schedule is shown.
    pub schedule_kind: RwSignal<ScheduleKind>,
    /// The schedule itself.
    pub schedule: Memo<NoiseSchedule>,
    /// Seed of the reverse chain.
    pub seed: RwSignal<u64>,
    /// Seed of the forward panel's ε.
    pub noise_seed: RwSignal<u64>,
    /// The reverse sampler.
    pub sampler: RwSignal<SamplerConfig>,
    /// The reverse step being shown, for the math panel.
    pub step: RwSignal<Option<StepCoefs>>,
    /// The reverse chain's frame on screen (0 is x_T; `None` before the first chain), for the URL.
    pub replay: RwSignal<Option<usize>>,
    /// True while any panel runs the model: one chain at a time shares the device.
    pub busy: RwSignal<bool>,
    /// Class-conditional models: the class the chains ask for (`None`: any, through "no class").
    pub class: RwSignal<Option<usize>>,
    /// Class-conditional models: the guidance scale w.
    pub guidance: RwSignal<f64>,
}

impl PageState {
    /// The state a page opens with: `view` (already clamped to the model's `timesteps`), the
    /// model's `image` shape and `x0`.
    pub fn new(view: &ViewState, timesteps: usize, image: ImageShape, x0: Vec<f32>) -> Self {
        let schedule_kind = RwSignal::new(view.schedule);
        Self {
            image,
            digit: RwSignal::new(view.digit),
            x0: RwSignal::new(x0),
            t: RwSignal::new(view.t),
            schedule_kind,
            schedule: Memo::new(move |_| {
                NoiseSchedule::new(schedule_kind.get(), timesteps).expect("T ≥ 1 from config.json")
            }),
            seed: RwSignal::new(view.seed),
            noise_seed: RwSignal::new(view.seed),
            sampler: RwSignal::new(view.sampler),
            step: RwSignal::new(None),
            replay: RwSignal::new(view.replay),
            busy: RwSignal::new(false),
            class: RwSignal::new(view.class),
            guidance: RwSignal::new(view.guidance),
        }
    }

    /// What a chain of `batch` images asks of the model now: every image the chosen class, with
    /// the chosen w (`None`: no class chosen, the unconditional chain).
    pub fn guidance_for(&self, batch: usize) -> Option<Guidance> {
        self.class.get_untracked().map(|c| Guidance {
            classes: vec![Some(c); batch],
            scale: self.guidance.get_untracked(),
        })
    }

    /// The view as a URL would say it (the backend and the build kept as the page was `opened`
    /// with).
    pub fn view(&self, opened: &ViewState) -> ViewState {
        ViewState {
            schedule: self.schedule_kind.get(),
            t: self.t.get(),
            digit: self.digit.get(),
            seed: self.seed.get(),
            sampler: self.sampler.get(),
            backend: opened.backend,
            wasm: opened.wasm,
            replay: self.replay.get(),
            class: self.class.get(),
            guidance: self.guidance.get(),
            model: None,
        }
    }

    /// Runs `task` on the page's model unless another panel is running it: `busy` is on from now
    /// until the task ends, and the task's error, if any, lands in `error` (cleared first). A
    /// click while busy does nothing.
    pub fn run_exclusive(
        self,
        error: RwSignal<Option<String>>,
        task: impl std::future::Future<Output = Result<(), String>> + 'static,
    ) {
        if self.busy.get_untracked() {
            return;
        }
        self.busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            if let Err(e) = task.await {
                error.set(Some(e));
            }
            self.busy.set(false);
        });
    }

    /// The state provided by the page (or a test) above the calling component.
    pub fn expect() -> Self {
        expect_context::<PageState>()
    }
}
