#!/usr/bin/env python3
"""Trunk's post-build hook: writes the page's Content-Security-Policy into the built index.html, and
names the WebGPU module's hashed files there (`<meta name="ddpm-webgpu-module">`, read by
src/web/worker.rs: the page fetches that module only where the browser has WebGPU).

The policy allows exactly what the explorer needs: its own origin for scripts, styles, images and
fetches (the wasm, config.json, model.bpk, the digits), WebAssembly compilation
('wasm-unsafe-eval'), the Web Worker started from a blob: URL, and trunk's one inline loader
script by its SHA-256 (its text names the hashed file names of each build, so the hash is taken
here, after the build). Everything else — other origins, plugins, inline scripts, frames — is
refused. Run by trunk (Trunk.toml) with TRUNK_STAGING_DIR set; `python3 scripts/csp.py DIR` runs it
on a built folder by hand.
"""
import base64
import hashlib
import os
import re
import sys

PLACEHOLDER = '<meta http-equiv="Content-Security-Policy" content="{{CSP}}" />'


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


WEBGPU_DIR = "webgpu"


def webgpu_module(folder: str) -> str:
    """The meta tag naming the WebGPU module's glue script and wasm, relative to the page. Trunk does
    not hash a worker's file names, so they get the hash of their contents here, as the page's own
    files have: a browser never pairs a cached module with a newer page."""
    directory = os.path.join(folder, WEBGPU_DIR)
    names = sorted(os.listdir(directory))
    glue = [n for n in names if n.endswith(".js")]
    wasm = [n for n in names if n.endswith("_bg.wasm")]
    if len(glue) != 1 or len(wasm) != 1:
        sys.exit(f"csp.py: {directory} should hold one glue script and one wasm, not {names}")
    digest = hashlib.sha256()
    for name in (glue[0], wasm[0]):
        with open(os.path.join(directory, name), "rb") as f:
            digest.update(f.read())
    stem = glue[0][: -len(".js")] + "-" + digest.hexdigest()[:16]
    hashed = (f"{stem}.js", f"{stem}_bg.wasm")
    for old, new in zip((glue[0], wasm[0]), hashed):
        os.rename(os.path.join(directory, old), os.path.join(directory, new))
    return f'<meta name="ddpm-webgpu-module" content="{WEBGPU_DIR}/{hashed[0]} {WEBGPU_DIR}/{hashed[1]}" />'


def main() -> None:
    folder = sys.argv[1] if len(sys.argv) > 1 else os.environ["TRUNK_STAGING_DIR"]
    path = os.path.join(folder, "index.html")
    with open(path, encoding="utf-8") as f:
        html = f.read()
    if PLACEHOLDER not in html:
        sys.exit(f"csp.py: {path} has no CSP placeholder ({PLACEHOLDER})")
    html = html.replace(PLACEHOLDER, PLACEHOLDER.replace("{{CSP}}", policy(html)) + "\n    " + webgpu_module(folder))
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)


if __name__ == "__main__":
    main()
