#!/usr/bin/env python3
"""Trunk's post-build hook: finishes the built index.html.

1. The page's loader. Trunk builds the page twice (www/index.html): its own module (WebAssembly
   SIMD, every current browser) and the same app with the `relaxed-simd` feature, whose CPU kernels
   multiply and add in one instruction (src/kernels/simd128_product.rs). Trunk's loader script
   starts the first; it is replaced here by one that starts the second where the browser validates
   relaxed SIMD (a 37-byte probe module), so a browser downloads one of the two, and the
   page's CPU workers run whichever the page runs. `?wasm=simd128` in the page's URL keeps the
   page's own module (to compare the two, benches/page_timing.mjs).
2. The WebGPU module's hashed files, named in `<meta name="ddpm-webgpu-module">` (read by
   src/web/worker.rs: the page fetches that module only where the browser has WebGPU).
3. The page's Content-Security-Policy: exactly what the explorer needs: its own origin for
   scripts, styles, images and fetches (the wasm, config.json, model.bpk, the digits), WebAssembly
   compilation ('wasm-unsafe-eval'), the Web Worker started from a blob: URL, and the one inline
   loader script by its SHA-256 (its text names the hashed file names of each build, so the hash is
   taken here, after the build). Everything else — other origins, plugins, inline scripts, frames
   — is refused.

Run by trunk (Trunk.toml) with TRUNK_STAGING_DIR set; `python3 scripts/post_build.py DIR` runs it on
a folder trunk has just built, by hand.
"""
import base64
import hashlib
import json
import os
import re
import sys

PLACEHOLDER = '<meta http-equiv="Content-Security-Policy" content="{{CSP}}" />'

WEBGPU_DIR = "webgpu"
RELAXED_SIMD_DIR = "relaxed-simd"

# A module with one function, (v128, v128, v128) -> v128, that returns f32x4.relaxed_madd of its
# arguments (opcode 0xfd 0x105): it validates only where the browser has relaxed SIMD.
RELAXED_SIMD_PROBE = [
    *b"\0asm", 1, 0, 0, 0,
    1, 8, 1, 0x60, 3, 0x7B, 0x7B, 0x7B, 1, 0x7B,  # type section: (v128 v128 v128) -> v128
    3, 2, 1, 0,  # function section: one function of that type
    10, 13, 1, 11, 0, 0x20, 0, 0x20, 1, 0x20, 2, 0xFD, 0x85, 0x02, 0x0B,  # code: the three locals, relaxed_madd
]

# Trunk's loader for the page's own module (trunk 0.21): the glue script and the wasm it starts.
TRUNK_LOADER = re.compile(
    r"<script type=\"module\">\s*import init, \* as bindings from '(?P<glue>[^']+)';\s*"
    r"const wasm = await init\(\{ module_or_path: '(?P<wasm>[^']+)' \}\);.*?</script>",
    flags=re.S,
)


def policy(html: str) -> str:
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'" for body in inline
    )
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'wasm-unsafe-eval' {hashes}".strip(),
            "worker-src blob:",
            "connect-src 'self'",
            "img-src 'self' data: blob:",
            "style-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def hashed_module(folder: str, subfolder: str) -> tuple[str, str]:
    """The glue script and wasm of a module trunk built into `subfolder` (relative paths). Trunk
    does not hash a worker's file names, so they get the hash of their contents here, as the page's
    own files have: a browser never pairs a cached module with a newer page."""
    directory = os.path.join(folder, subfolder)
    names = sorted(os.listdir(directory))
    glue = [n for n in names if n.endswith(".js")]
    wasm = [n for n in names if n.endswith("_bg.wasm")]
    if len(glue) != 1 or len(wasm) != 1:
        sys.exit(f"post_build.py: {directory} should hold one glue script and one wasm, not {names}")
    digest = hashlib.sha256()
    for name in (glue[0], wasm[0]):
        with open(os.path.join(directory, name), "rb") as f:
            digest.update(f.read())
    stem = glue[0][: -len(".js")] + "-" + digest.hexdigest()[:16]
    hashed = (f"{stem}.js", f"{stem}_bg.wasm")
    for old, new in zip((glue[0], wasm[0]), hashed):
        os.rename(os.path.join(directory, old), os.path.join(directory, new))
    return f"{subfolder}/{hashed[0]}", f"{subfolder}/{hashed[1]}"


def integrity(folder: str, url: str, public: str) -> str:
    """The file's Subresource Integrity value (SHA-384), as trunk gives the page's own files."""
    with open(os.path.join(folder, url[len(public) :]), "rb") as f:
        return "sha384-" + base64.b64encode(hashlib.sha384(f.read()).digest()).decode()


def loader(html: str, folder: str) -> str:
    """`html` with trunk's loader replaced by one that picks the relaxed-SIMD build where it
    validates (and puts a message where the progress line was if it cannot start), and without
    trunk's preloads of the page's own module (a browser would download both)."""
    found = TRUNK_LOADER.search(html)
    if found is None:
        sys.exit("post_build.py: trunk's loader script is not in index.html as expected (trunk 0.21's)")
    own = (found["glue"], found["wasm"])
    public = own[0][: own[0].rindex("/") + 1]
    relaxed = tuple(public + path for path in hashed_module(folder, RELAXED_SIMD_DIR))
    modules = {
        name: {"glue": glue, "wasm": wasm, "integrity": integrity(folder, wasm, public)}
        for name, (glue, wasm) in (("simd128", own), ("relaxed-simd", relaxed))
    }
    script = f"""<script type="module">
const modules = {json.dumps(modules)};
// Valid only where the browser has relaxed SIMD (scripts/post_build.py).
const probe = new Uint8Array({json.dumps(RELAXED_SIMD_PROBE)});
const wanted = new URLSearchParams(location.search).get('wasm');
const name = wanted !== 'simd128' && WebAssembly.validate(probe) ? 'relaxed-simd' : 'simd128';
const chosen = modules[name];
try {{
  const response = fetch(chosen.wasm, {{ integrity: chosen.integrity }});
  const bindings = await import(chosen.glue);
  const wasm = await bindings.default({{ module_or_path: response }});
  window.wasmBindings = bindings;
  window.wasmModuleName = name;
  dispatchEvent(new CustomEvent("TrunkApplicationStarted", {{ detail: {{ wasm }} }}));
}} catch (error) {{
  // The app's own code did not arrive or did not start: say so where the progress line was.
  const line = document.querySelector('#ddpm-app .loading');
  if (line) {{
    line.className = 'error';
    line.setAttribute('role', 'alert');
    line.textContent = `The app could not be loaded (${{error.message ?? error}}). Reload the page to try again.`;
  }}
  throw error;
}}
</script>"""
    html = html[: found.start()] + script + html[found.end() :]
    for path in own:
        html, removed = re.subn(rf'<link rel="(?:module)?preload" href="{re.escape(path)}"[^>]*>', "", html)
        if removed != 1:
            sys.exit(f"post_build.py: trunk's preload of {path} is not in index.html as expected")
    return html


def main() -> None:
    folder = sys.argv[1] if len(sys.argv) > 1 else os.environ["TRUNK_STAGING_DIR"]
    path = os.path.join(folder, "index.html")
    with open(path, encoding="utf-8") as f:
        html = f.read()
    if PLACEHOLDER not in html:
        sys.exit(f"post_build.py: {path} has no CSP placeholder ({PLACEHOLDER})")
    html = loader(html, folder)
    webgpu_glue, webgpu_wasm = hashed_module(folder, WEBGPU_DIR)
    webgpu = f'<meta name="ddpm-webgpu-module" content="{webgpu_glue} {webgpu_wasm}" />'
    html = html.replace(PLACEHOLDER, PLACEHOLDER.replace("{{CSP}}", policy(html)) + "\n    " + webgpu)
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)


if __name__ == "__main__":
    main()
