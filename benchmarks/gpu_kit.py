"""Everything benchmarks/gpu_suite.sh needs on a GPU machine that reaches no package index, in one
folder of a few tens of MB, built here (where pip reaches PyPI and the project is installed).

    python benchmarks/gpu_kit.py KIT [--target-packages FILE] [--python-version 3.12]
        KIT/wheels/       the project's runtime dependencies that the target lacks (or has in a
                          version the project's requirement refuses), as binary wheels for its
                          Python on manylinux x86-64, at the versions installed here. Left out:
                          the app's stack (streamlit and what only it needs; the suite runs no
                          app) and wandb (transformer-lens imports it only in its own training
                          loop).
        KIT/pair-source/  the default pair's config and tokenizer (tokenizer.json xz-compressed,
                          ~3.5 MB instead of ~33), for `gpu_suite_setup.py pair --from`.
        KIT/data/         the files the project reads from its data packages
                          (interp.datasets.data_package_files), as package folders with their
                          versions' metadata: on PYTHONPATH they stand in for the packages.
    bash benchmarks/gpu_kit_run.sh KIT     on the GPU machine, from the repository root

FILE lists what the target has, one `name` or `name==version` per line (`pip list
--format=freeze` there); benchmarks/gpu_target_packages.txt is the lent H200 image's. A package
listed without a version is trusted unless the requirement has an upper bound (then it is
carried: its version there is unknown).
"""

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).parent
PROJECT = "interp-workbench"
LEFT_OUT = ("streamlit", "wandb")  # see the docstring
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in (17, 24, 27, 28, 31, 34, 35)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def read_target_packages(path: Path) -> dict[str, str | None]:
    """name -> version (None when the list does not say)."""
    packages = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = version.strip() or None
    return packages


def marker_environment(python_version: str) -> dict[str, str]:
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def target_satisfies(requirement: Requirement, target: dict[str, str | None]) -> bool:
    name = canonicalize_name(requirement.name)
    if name not in target:
        return False
    version = target[name]
    if version is None:
        return not any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier)
    return requirement.specifier.contains(version, prereleases=True)


def wheels_to_carry(target: dict[str, str | None], python_version: str) -> dict[str, str]:
    """name -> version installed here, for every runtime dependency of the project (transitively)
    that the target does not satisfy, never descending into what it has or LEFT_OUT."""
    environment = marker_environment(python_version)
    carry: dict[str, str] = {}
    todo = [Requirement(text) for text in metadata.requires(PROJECT) or []]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        if name in carry or name in LEFT_OUT or target_satisfies(requirement, target):
            continue
        carry[name] = metadata.version(name)
        todo += [Requirement(text) for text in metadata.requires(name) or []]
    return dict(sorted(carry.items()))


def download_wheels(carry: dict[str, str], out: Path, python_version: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, version in carry.items():
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            *(option for platform in PLATFORMS for option in ("--platform", platform)),
            "--dest", str(out), f"{name}=={version}",
        ]  # fmt: skip
        if subprocess.run(command).returncode == 0:
            continue
        # no binary wheel on the index (an sdist only): build one here; only a pure-Python wheel
        # (py3-none-any) installs on the target
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
             str(out), f"{name}=={version}"],
            check=True,
        )  # fmt: skip
        built = sorted(out.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        if not built or not built[0].name.endswith("-none-any.whl"):
            raise SystemExit(f"gpu_kit: no wheel of {name}=={version} for the target: {built}")


def write_data(out: Path) -> int:
    """Copy the data packages' files the project reads; returns the bytes copied."""
    from interp.builtin_models import package_dir
    from interp.datasets import data_package_files

    copied = 0
    distributions = {}
    for distribution, module, path in data_package_files():
        relative = path.relative_to(package_dir(module, distribution))
        destination = out / module / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        copied += path.stat().st_size
        distributions[distribution] = module
    for distribution, module in distributions.items():
        # an empty __init__ makes the folder a regular package, found before a namespace one
        (out / module / "__init__.py").write_text("")
        version = metadata.version(distribution)
        info = out / f"{module}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kit", type=Path)
    parser.add_argument("--target-packages", type=Path, default=HERE / "gpu_target_packages.txt")
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from gpu_suite_setup import write_pair_source

    carry = wheels_to_carry(read_target_packages(args.target_packages), args.python_version)
    print(f"gpu_kit: {len(carry)} wheels: " + ", ".join(f"{n}=={v}" for n, v in carry.items()))
    download_wheels(carry, args.kit / "wheels", args.python_version)
    write_pair_source(args.kit / "pair-source")
    copied = write_data(args.kit / "data")
    sizes = {
        part: sum(f.stat().st_size for f in (args.kit / part).rglob("*") if f.is_file())
        for part in ("wheels", "pair-source", "data")
    }
    print(
        f"gpu_kit: {args.kit}: "
        + ", ".join(f"{part} {size / 2**20:.1f} MiB" for part, size in sizes.items())
        + f" (data files {copied / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
