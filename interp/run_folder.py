"""The run-folder layout: where each pipeline step writes inside `runs/<name>/`. The one place that
spells these folder names; the pipeline, the analysis, the steering explorer and the app ask a
`RunFolder` for their paths. (Each step names the files inside its own folder.)

    runs/<name>/
      cache/                   interp cache: manifest.json + shards
      dictionaries/<dict>/     interp train: config.json, weights.safetensors, eval.json
      analysis/<dict>/         interp analyze: latents.parquet, examples.parquet, report.md, ...
      analysis/comparison.md   the analyses of all dictionaries side by side
      run.json                 what the analysis recorded about the run (timings, models)
      diff-sae/                interp diff-sae
      adl/                     interp adl
      change_profile/          interp change-profile
      tuco/                    interp tuco experiments
      steering/                interp steer eval (maps/<task>/<method>/: the saved maps)
      weights/                 interp weights
      horizon/                 interp horizon
      amplification/           interp amplify
      pipeline/<step>.json     interp pipeline: one record per finished step
"""

from dataclasses import dataclass
from pathlib import Path

RUN_FOLDER_ENV = "INTERP_RUN_FOLDER"  # the run folder `interp app` hands to the app

CACHE = "cache"
DICTIONARIES = "dictionaries"
ANALYSIS = "analysis"
TUCO = "tuco"
STEERING = "steering"
STEP_FOLDERS = (CACHE, DICTIONARIES, ANALYSIS, TUCO, STEERING)  # what the app summarises


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def cache(self) -> Path:
        return self.root / CACHE

    @property
    def dictionaries_folder(self) -> Path:
        return self.root / DICTIONARIES

    def dictionary(self, name: str) -> Path:
        return self.dictionaries_folder / name

    @property
    def analyses(self) -> Path:
        return self.root / ANALYSIS

    def analysis(self, dictionary: str) -> Path:
        return self.analyses / dictionary

    @property
    def comparison(self) -> Path:
        return self.analyses / "comparison.md"

    @property
    def run_record(self) -> Path:
        return self.root / "run.json"

    @property
    def diff_sae(self) -> Path:
        return self.root / "diff-sae"

    @property
    def adl(self) -> Path:
        return self.root / "adl"

    @property
    def change_profile(self) -> Path:
        return self.root / "change_profile"

    @property
    def tuco(self) -> Path:
        return self.root / TUCO

    @property
    def steering(self) -> Path:
        return self.root / STEERING

    @property
    def maps_folder(self) -> Path:
        return self.steering / "maps"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def horizon(self) -> Path:
        return self.root / "horizon"

    @property
    def amplification(self) -> Path:
        return self.root / "amplification"

    def pipeline_record(self, step: str) -> Path:
        return self.root / "pipeline" / f"{step}.json"

    def relative(self, path: Path) -> str:
        """`path` as the run folder's users read it (`analysis/btk/latents.parquet`)."""
        return str(Path(path).relative_to(self.root))
