"""Render time of every app page from precomputed files, for a 16k-latent dictionary.

Builds a synthetic run folder (tests/app_fixtures.py: `--latents` latents, stored examples for
`--example-latents` of them; tiny models with a real crosscoder of as many latents for the Search
page; the known-answer diffing outputs written by their writers on the tiny pair) unless `--run`
names a real one, then runs each page's script with Streamlit's AppTest (the same script run a
browser triggers, without the network) and prints one JSON object: per page, `first_s` (cold: the
page's files are read and cached; Search: the models load and the text is encoded) and `warm_s`
(median of `--repeats` reruns, the cost of every interaction afterwards) and `warm_cpu_s` (the
same reruns' CPU time of this process: on a shared machine the wall time also counts the time
other jobs hold the cores). The Search page searches `--text`.

    python benchmarks/app_render.py [--run runs/NAME] [--latents 16384] [--repeats 5]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("home", "latents", "latent", "search", "tuco", "steering", "compare", "diffing")


def time_pages(run: Path, repeats: int, latent: int, text: str) -> dict[str, dict[str, float]]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.session_state["run_folder"] = str(run)
    at.query_params["latent"] = str(latent)
    at.query_params["text"] = text
    at.run()
    timings = {}
    for page in PAGES:
        at.switch_page(f"views/{page}.py")
        started = time.perf_counter()
        at.run()
        first = time.perf_counter() - started
        assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
        warm, warm_cpu = [], []
        for _ in range(repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            at.run()
            warm.append(time.perf_counter() - started)
            warm_cpu.append(time.process_time() - started_cpu)
        timings[page] = {
            "first_s": round(first, 3),
            "warm_s": round(statistics.median(warm), 3),
            "warm_cpu_s": round(statistics.median(warm_cpu), 3),
        }
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a real run folder (default: synthetic)")
    parser.add_argument("--latents", type=int, default=16384)
    parser.add_argument("--example-latents", type=int, default=16384)
    parser.add_argument("--latent", type=int, default=5, help="latent shown on the Latent page")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--text", default="The capital of France is Paris.", help="searched on the Search page"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from app_fixtures import add_tiny_models, build_diffing_results, build_run_folder

            run = build_run_folder(
                Path(tmp) / "run", n_latents=args.latents, n_example_latents=args.example_latents
            )
            add_tiny_models(run, args.latents)
            build_diffing_results(run)
        timings = time_pages(run, args.repeats, args.latent, args.text)
    print(
        json.dumps(
            {"run": str(args.run or "synthetic"), "latents": args.latents, "pages": timings},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
