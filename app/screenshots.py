"""Serve the app on a run folder and photograph its pages in headless Chromium.

    python -m app.screenshots RUN_FOLDER OUT_DIR [--latent J] [--text TEXT] [--small]

writes OUT_DIR/<page>.png for every page (the Latent page on latent J, the Search page on TEXT:
it loads the run's models, so the first search waits for them). The browser is Debian's chromium
(`apt-get install -y chromium`) driven by Playwright; Playwright's own browser download is never
used. The end-to-end browser test (tests/test_app_browser.py) uses the same `serve` and
`chromium`.
"""

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import InterpError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_PATHS = {
    "home": "",
    "latents": "latents",
    "latent": "latent",
    "search": "search",
    "tuco": "tuco",
    "steering": "steering",
    "compare": "compare",
    "outputs": "outputs",
    "diffing": "diffing",
}
SEARCH_TEXT = "I'm sorry, but I cannot help with that."
MODEL_LOAD_MS = 900_000  # the Search page loads the pair on its first search


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(run_folder: Path, port: int | None = None, timeout: float = 120.0) -> Iterator[str]:
    """Run `interp app RUN_FOLDER` in a subprocess; yield its base URL once its health endpoint
    answers; stop it afterwards."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "interp.cli.main", "app", str(run_folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise InterpError(
                    f"`interp app` exited with {process.returncode}: "
                    f"{process.stdout.read() if process.stdout else ''}"
                )
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise InterpError(f"`interp app` did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A Playwright page in Debian's headless chromium."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise InterpError(
            f"{CHROMIUM} is missing: install it with "
            "`apt-get update && apt-get install -y chromium`"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(90_000)
            yield page
        finally:
            browser.close()


def wait_rendered(page) -> None:
    """Wait until the page script has finished (the app root's script state is `notRunning`
    after a title was drawn), no element is a loading skeleton any more (plotly is loaded lazily)
    and every plotly chart has been drawn."""
    page.wait_for_selector("h1")
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid^='stSkeleton']\")"
        " && document.querySelectorAll(\"[data-testid='stPlotlyChart']\").length"
        " === document.querySelectorAll(\"[data-testid='stPlotlyChart'] .js-plotly-plot\").length"
    )


def screenshot_whole_page(page, target: Path) -> None:
    """Streamlit scrolls inside its main container, not the document: grow the viewport to the
    container's height (until it stops growing: charts and tables lay out lazily) so that one
    screenshot shows the whole page."""
    width = page.viewport_size["width"]
    height = 0
    for _ in range(6):
        page.wait_for_timeout(700)
        measured = page.evaluate(
            "() => document.querySelector(\"[data-testid='stMain']\").scrollHeight"
        )
        if measured == height:
            break
        height = int(measured)
        page.set_viewport_size({"width": width, "height": max(height, 600)})
    wait_rendered(page)
    page.screenshot(path=str(target))
    page.set_viewport_size({"width": width, "height": 1000})


def shrink_png(path: Path, colors: int = 128) -> None:
    """Re-encode a screenshot with a palette (about 3x smaller; fine for flat UI colours)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    palette.save(path, optimize=True)


def capture_pages(
    run_folder: Path, out: Path, latent: int, small: bool = False, text: str = SEARCH_TEXT
) -> list[Path]:
    from urllib.parse import urlencode

    out.mkdir(parents=True, exist_ok=True)
    written = []
    queries = {"latent": {"latent": str(latent)}, "search": {"text": text}}
    with serve(run_folder, timeout=600) as url, chromium() as page:
        page.set_default_timeout(MODEL_LOAD_MS)  # a loaded machine: the first page imports torch
        for name, path in PAGE_PATHS.items():
            query = f"?{urlencode(queries[name])}" if name in queries else ""
            page.goto(f"{url}/{path}{query}")
            if name == "search":
                page.wait_for_selector("a.search-latent", timeout=MODEL_LOAD_MS)
            wait_rendered(page)
            target = out / f"{name}.png"
            screenshot_whole_page(page, target)
            if small:
                shrink_png(target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--latent", type=int, default=0, help="latent shown on the Latent page")
    parser.add_argument("--small", action="store_true", help="palette PNGs (for docs/)")
    parser.add_argument("--text", default=SEARCH_TEXT, help="searched on the Search page")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for path in capture_pages(args.run_folder, args.out, args.latent, args.small, args.text):
        print(path)


if __name__ == "__main__":
    main()
