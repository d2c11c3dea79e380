//! The one canvas component and small DOM helpers: drawing pictures into canvases, yielding to
//! the browser, the clock.

use crate::image::Picture;
use leptos::html::Canvas;
use leptos::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData};

/// A canvas showing `picture` (one canvas pixel per picture pixel; CSS scales it up, pixelated),
/// redrawn whenever the picture changes. Every picture on the page is one of these.
#[component]
pub fn PictureCanvas(
    /// The picture (nothing is drawn while it is `None`).
    #[prop(into)]
    picture: Signal<Option<Picture>>,
    /// Accessible name.
    label: &'static str,
    /// CSS class.
    class: &'static str,
    /// The canvas element, for a caller that needs it (the draw pad maps pointer positions on it).
    #[prop(optional)]
    node_ref: NodeRef<Canvas>,
) -> impl IntoView {
    Effect::new(move |_| {
        if let (Some(img), Some(c)) = (picture.get(), node_ref.get()) {
            draw_picture(&c, &img);
        }
    });
    view! { <canvas node_ref=node_ref class=class width="28" height="28" role="img" aria-label=label></canvas> }
}

/// Draws `image` into `canvas` at one canvas pixel per image pixel (CSS scales it up, pixelated).
pub fn draw_picture(canvas: &HtmlCanvasElement, image: &Picture) {
    if canvas.width() != image.width as u32 || canvas.height() != image.height as u32 {
        canvas.set_width(image.width as u32);
        canvas.set_height(image.height as u32);
    }
    let Some(ctx) = context_2d(canvas) else { return };
    let rgba = image.to_rgba();
    if let Ok(data) =
        ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), image.width as u32, image.height as u32)
    {
        let _ = ctx.put_image_data(&data, 0.0, 0.0);
    }
}

/// The canvas's 2-D context.
pub fn context_2d(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

/// Reads a canvas's pixels back as gray bytes (the red channel): what the tests compare.
pub fn read_gray(canvas: &HtmlCanvasElement) -> Vec<u8> {
    let Some(ctx) = context_2d(canvas) else {
        return Vec::new();
    };
    ctx.get_image_data(0.0, 0.0, canvas.width() as f64, canvas.height() as f64)
        .map(|d| d.data().0.chunks(4).map(|p| p[0]).collect())
        .unwrap_or_default()
}

/// Lets the browser paint and handle input before the next chunk of work.
///
/// A message to itself through a `MessageChannel` rather than `setTimeout(0)`: a page that keeps
/// re-arming zero timeouts gets them clamped to 4 ms or more, which was ~7 ms of idle time per
/// reverse step; a message task runs as soon as the pending rendering and input are done.
pub async fn yield_to_browser() {
    let promise = js_sys::Promise::new(&mut |resolve, _| match web_sys::MessageChannel::new() {
        Ok(channel) => {
            channel.port1().set_onmessage(Some(&resolve));
            let _ = channel.port2().post_message(&wasm_bindgen::JsValue::NULL);
        }
        Err(_) => {
            if let Some(w) = web_sys::window() {
                let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Milliseconds from the page's clock.
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}
