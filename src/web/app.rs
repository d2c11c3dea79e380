//! The page: loads the engine (device, weights, digits), then lays out the panels around shared,
//! URL-backed state.

use super::compare_panel::ComparePanel;
use super::engine::Engine;
use super::forward_panel::ForwardPanel;
use super::latent_walk::LatentWalk;
use super::math_panel::MathPanel;
use super::models::{Catalogue, ModelEntry, progress_text};
use super::reverse_panel::ReversePanel;
use super::state::PageState;
use crate::data::bytes_to_unit;
use crate::view_state::ViewState;
use leptos::prelude::*;
use send_wrapper::SendWrapper;
use std::rc::Rc;

/// The whole app: a loading indicator until the model is ready, then the explorer, or a clear
/// message if something could not be loaded.
#[component]
pub fn App() -> impl IntoView {
    // The URL is read here; the backend it asks for is needed before the model is loaded.
    let opened = ViewState::parse(&page_query());
    let preference = opened.backend;
    // The model on show: the link's, then the picker's. Picking another loads it (its files are
    // fetched only then) while the page keeps showing the last one.
    let model = RwSignal::new(opened.model);
    let loading = RwSignal::new(None::<String>);
    let engine = LocalResource::new(move || {
        let id = model.get();
        async move {
            let report = move |entry: &ModelEntry, received: usize| {
                let size = progress_text(received, entry.weights_bytes);
                loading.set(Some(format!("Fetching the {} model's weights: {size}", entry.name)));
            };
            let loaded = Engine::load(preference, id, report).await;
            loading.set(None);
            loaded.map(|e| SendWrapper::new(Rc::new(e)))
        }
    });
    view! {
        <header>
            <h1>"DDPM Explorer"</h1>
            <p class="subtitle">"Denoising Diffusion Probabilistic Models (Ho et al. 2020), live in your browser"</p>
        </header>
        <p class="model-loading" role="status" hidden=move || loading.get().is_none()>{move || loading.get()}</p>
        <Transition fallback=|| view! {
            <p class="loading" role="status"><span class="spinner"></span>"Loading the model weights and opening the compute device…"</p>
        }>
            {move || engine.get().map(|loaded| match loaded {
                Ok(engine) => {
                    // The view as the URL says now (the page keeps it in step), the model as loaded.
                    let (view, notices) = ViewState::parse_noting(&page_query());
                    view! { <Explorer engine=engine view=view notices=notices model=model /> }.into_any()
                }
                Err(error) => view! {
                    <div class="error" role="alert">
                        <p>{format!("The model could not be loaded: {}", error.message)}</p>
                        {error.retry_helps.then(|| view! {
                            <button class="retry" on:click=move |_| engine.refetch()>"Try again"</button>
                        })}
                    </div>
                }.into_any(),
            })}
        </Transition>
    }
}

/// Reads the page's query string.
fn page_query() -> String {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default()
}

/// Replaces the page's URL with `query`, without a reload or a history entry.
fn set_page_query(query: &str) {
    if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(query));
    }
}

/// The explorer proper, once the engine is loaded.
#[component]
pub fn Explorer(
    /// The loaded model and device.
    engine: SendWrapper<Rc<Engine>>,
    /// What the URL asked for when the page opened.
    view: ViewState,
    /// What of the URL could not be taken as written, and why.
    notices: Vec<String>,
    /// The model to show (`None`: the page's first); the picker sets it.
    model: RwSignal<Option<String>>,
) -> impl IntoView {
    let timesteps = engine.config.timesteps;
    let mut notices = notices;
    notices.extend(engine.notice.clone());
    let initial = view
        .clamped_noting(timesteps, &mut notices)
        .with_classes_noting(engine.unet.num_classes(), &mut notices);
    let digits: Vec<Vec<f32>> = (0..engine.digits.len())
        .map(|i| bytes_to_unit(engine.digits.image(i)))
        .collect();
    let initial = ViewState {
        digit: initial.digit.min(digits.len().saturating_sub(1)),
        ..initial
    };
    let image = engine.image();
    let x0 = digits
        .get(initial.digit)
        .cloned()
        .unwrap_or_else(|| vec![-1.0; image.values()]);
    let state = PageState::new(&initial, timesteps, image, x0);
    provide_context(state);

    // Keep the URL in step with the view, so it can be shared and replayed.
    let shown_model = (!engine.catalogue.is_default(&engine.model)).then(|| engine.model.id.clone());
    Effect::new(move |_| {
        let view = ViewState {
            model: shown_model.clone(),
            ..state.view(&initial)
        };
        set_page_query(&view.to_query())
    });

    let backend = engine.backend.clone();
    let trained_with = format!(
        "model: U-Net with channels {}, {} schedule, T = {}",
        engine
            .config
            .unet
            .level_channels()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        engine.config.schedule,
        timesteps
    );
    view! {
        <p class="badge" class:cpu=!backend.webgpu role="status" title=backend.fallback_reason.clone().unwrap_or_default()>
            {backend.label()}
        </p>
        <ModelPicker catalogue=engine.catalogue.clone() shown=engine.model.id.clone() model=model />
        <p class="model-info">{trained_with}</p>
        {(!notices.is_empty()).then(|| view! {
            <div class="notice" role="status">
                <p>"Some settings in this link were not used:"</p>
                <ul>{notices.into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
            </div>
        })}
        <main>
            <ForwardPanel digits=digits noun=engine.model.noun.clone() />
            <MathPanel />
            <ReversePanel engine=engine.clone() />
            <ComparePanel engine=engine.clone() />
            <LatentWalk engine=engine />
        </main>
    }
}

/// The models the page offers, when it offers more than one: picking one loads it.
#[component]
fn ModelPicker(
    /// The page's models.
    catalogue: Catalogue,
    /// The id of the model on show.
    shown: String,
    /// Set to the picked model's id.
    model: RwSignal<Option<String>>,
) -> impl IntoView {
    let busy = PageState::expect().busy;
    (catalogue.models.len() > 1).then(|| {
        let options = catalogue
            .models
            .into_iter()
            .map(|m| view! { <option value=m.id.clone() selected=m.id == shown>{m.name}</option> })
            .collect_view();
        view! {
            <label class="model-choice">"Model "
                <select class="model-picker" disabled=move || busy.get()
                    on:change=move |ev| model.set(Some(event_target_value(&ev)))>
                    {options}
                </select>
            </label>
        }
    })
}
