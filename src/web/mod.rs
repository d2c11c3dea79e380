//! The browser app: a Leptos front end over the same schedule, samplers and U-Net the CLI uses.
//! Only DOM and device edges live here; every formula comes from the core modules.

pub mod app;
pub mod article;
pub mod canvas;
pub mod chain_driver;
pub mod compare_panel;
pub mod controls;
pub mod engine;
pub mod forward_panel;
pub mod guidance_controls;
pub mod latent_walk;
pub mod math_panel;
pub mod models;
pub mod reverse_panel;
pub mod schedule_plot;
pub mod state;
pub mod worker;
pub mod worker_pool;

use wasm_bindgen::prelude::wasm_bindgen;

/// The id of the element the app mounts into (`www/index.html`).
pub const MOUNT_ID: &str = "ddpm-app";

/// Entry point: mounts the app when the page has its mount point (test pages have none).
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let mount = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(MOUNT_ID));
    if let Some(element) = mount {
        use wasm_bindgen::JsCast;
        // The static loading skeleton of index.html makes way for the app.
        element.set_inner_html("");
        let handle = leptos::mount::mount_to(element.unchecked_into(), app::App);
        handle.forget();
    }
}
