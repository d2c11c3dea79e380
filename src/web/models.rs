//! The models the page offers and the fetching of their files.
//!
//! `assets/models.json` lists them; the first is the one in `assets/` itself, loaded with the page,
//! the others live in subfolders (`assets/fashion/`) and are fetched only when picked, with a
//! progress line. Each folder holds `config.json`, `model.bpk` and the real images the forward
//! panel starts from. Without a `models.json` the page offers the one model in `assets/`.

use crate::view_state::is_model_id;
use js_sys::{Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Where the app's files are served from, relative to the page.
pub const ASSETS: &str = "assets";
/// The list of models, in `assets/`.
pub const CATALOGUE_FILE: &str = "models.json";

/// One model the page offers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ModelEntry {
    /// Its name in links (`&model=fashion`).
    pub id: String,
    /// Its name in the picker ("Fashion-MNIST").
    pub name: String,
    /// Its folder under `assets/` (empty: `assets/` itself).
    #[serde(default)]
    pub dir: String,
    /// The size of its `model.bpk`, for the progress line.
    #[serde(default)]
    pub weights_bytes: Option<usize>,
    /// What one of its images is called in the page's sentences ("digit", "item").
    #[serde(default)]
    pub noun: ImageNoun,
    /// The ids it had before (`digits-by-class`), so that links saved then still open it.
    #[serde(default)]
    pub formerly: Vec<String>,
}

/// What a model's images are, in the singular and the plural, for the page's sentences.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ImageNoun {
    /// "digit".
    pub one: String,
    /// "digits".
    pub many: String,
}

impl Default for ImageNoun {
    /// A list that names none: "image", "images".
    fn default() -> Self {
        Self {
            one: "image".into(),
            many: "images".into(),
        }
    }
}

impl ModelEntry {
    /// Its id, then its former ids.
    fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.formerly.iter().map(String::as_str))
    }

    /// The URL of one of its files.
    pub fn url(&self, file: &str) -> String {
        match self.dir.as_str() {
            "" => format!("{ASSETS}/{file}"),
            dir => format!("{ASSETS}/{dir}/{file}"),
        }
    }
}

/// The models the page offers, the default first.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Catalogue {
    /// At least one.
    pub models: Vec<ModelEntry>,
}

impl Default for Catalogue {
    /// The one model in `assets/`.
    fn default() -> Self {
        Self {
            models: vec![ModelEntry {
                id: "default".into(),
                name: "the shipped model".into(),
                dir: String::new(),
                weights_bytes: None,
                noun: ImageNoun::default(),
                formerly: Vec::new(),
            }],
        }
    }
}

impl Catalogue {
    /// Reads `models.json`: at least one model, ids (former ids included) that links can carry and
    /// that differ, folders that stay inside `assets/`.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let catalogue: Catalogue = serde_json::from_str(json).map_err(|e| format!("{CATALOGUE_FILE}: {e}"))?;
        if catalogue.models.is_empty() {
            return Err(format!("{CATALOGUE_FILE} lists no model"));
        }
        let ids: Vec<&str> = catalogue.models.iter().flat_map(ModelEntry::ids).collect();
        for (i, id) in ids.iter().enumerate() {
            if !is_model_id(id) || ids[..i].contains(id) {
                return Err(format!("{CATALOGUE_FILE}: '{id}' is not a usable, distinct model id"));
            }
        }
        for m in &catalogue.models {
            let inside = m.dir.is_empty() || m.dir.split('/').all(is_model_id);
            if !inside {
                return Err(format!(
                    "{CATALOGUE_FILE}: the folder '{}' is not a plain subfolder",
                    m.dir
                ));
            }
        }
        Ok(catalogue)
    }

    /// The model `id` names (its id now or a former one), the first when `id` is `None`; `None`
    /// when no model has that id.
    pub fn pick(&self, id: Option<&str>) -> Option<&ModelEntry> {
        match id {
            None => self.models.first(),
            Some(id) => self.models.iter().find(|m| m.ids().any(|own| own == id)),
        }
    }

    /// Whether `entry` is the default model (its id is left out of links).
    pub fn is_default(&self, entry: &ModelEntry) -> bool {
        self.models.first() == Some(entry)
    }
}

/// "1.2 of 2.4 MB" (or "1.2 MB" when the size is unknown).
pub fn progress_text(received: usize, total: Option<usize>) -> String {
    let mb = |b: usize| b as f64 / 1e6;
    match total {
        Some(total) if total > 0 => format!("{:.1} of {:.1} MB", mb(received), mb(total)),
        _ => format!("{:.1} MB", mb(received)),
    }
}

/// Why the model could not be loaded, and whether trying again may help (a network failure or a
/// busy server may pass; a corrupt file or a config that does not match its weights will not).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadError {
    /// What went wrong, for the page.
    pub message: String,
    /// Whether a retry can help.
    pub retry_helps: bool,
}

impl LoadError {
    /// A failure a retry will not mend.
    pub fn lasting(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_helps: false,
        }
    }

    /// A failure that may pass.
    pub fn passing(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_helps: true,
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Fetches a file from the page's origin.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, LoadError> {
    read_body(send(url).await?, url).await
}

/// [`fetch_bytes`], telling `on_progress` the bytes received so far as they arrive.
pub async fn fetch_bytes_reporting(url: &str, mut on_progress: impl FnMut(usize)) -> Result<Vec<u8>, LoadError> {
    let response = send(url).await?;
    let Some(body) = response.body() else {
        return read_body(response, url).await;
    };
    let broken = |e: JsValue| LoadError::passing(format!("{url}: reading the body failed: {e:?}"));
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(broken)?;
        if Reflect::get(&chunk, &"done".into()).map_err(broken)?.as_bool() != Some(false) {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(broken)?.unchecked_into();
        let start = bytes.len();
        bytes.resize(start + value.length() as usize, 0);
        value.copy_to(&mut bytes[start..]);
        on_progress(bytes.len());
    }
    Ok(bytes)
}

/// The page's list of models: `assets/models.json`, or the one model in `assets/` when there is no
/// such file.
pub async fn fetch_catalogue() -> Result<Catalogue, LoadError> {
    match fetch_bytes(&format!("{ASSETS}/{CATALOGUE_FILE}")).await {
        Ok(bytes) => Catalogue::from_json(&String::from_utf8_lossy(&bytes)).map_err(LoadError::lasting),
        Err(e) if !e.retry_helps => Ok(Catalogue::default()),
        Err(e) => Err(e),
    }
}

/// Asks for `url`; an HTTP error status is an error, which a retry may mend for server errors,
/// timeouts and rate limits (a missing file stays missing).
async fn send(url: &str) -> Result<gloo_net::http::Response, LoadError> {
    let response = gloo_net::http::Request::get(url)
        .send()
        .await
        .map_err(|e| LoadError::passing(format!("could not fetch {url}: {e}")))?;
    if !response.ok() {
        let status = response.status();
        return Err(LoadError {
            message: format!("{url}: HTTP {status} {}", response.status_text()),
            retry_helps: status >= 500 || status == 408 || status == 429,
        });
    }
    Ok(response)
}

/// The whole body of `response`.
async fn read_body(response: gloo_net::http::Response, url: &str) -> Result<Vec<u8>, LoadError> {
    response
        .binary()
        .await
        .map_err(|e| LoadError::passing(format!("{url}: reading the body failed: {e}")))
}
