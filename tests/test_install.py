"""Installing (Makefile, pyproject.toml, README): which torch `make setup` installs, what it says while it works,
and the distribution name.

The torch step is resolved by pip itself (`--dry-run --report`) against two small local indexes that stand
in for PyPI, whose torch 2.13.0 for Linux needs CUDA's nvidia-* packages, and for PyTorch's CPU index, whose
torch 2.13.0+cpu needs none; so these tests run offline. `test_the_real_indexes` asks the real ones (marked
network: it needs download.pytorch.org as well as PyPI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="needs make")


def wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel: enough metadata for pip to resolve it."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{dist}.dist-info/METADATA": meta,
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def simple_index(root: Path, wheels: list[Path]) -> str:
    """A PEP 503 index of `wheels` under `root`; returns its file:// URL."""
    for w in wheels:
        project = root / re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower()
        project.mkdir(parents=True, exist_ok=True)
        shutil.copy(w, project / w.name)
        links = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(project.glob("*.whl")))
        (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    return root.as_uri()


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """Stand-ins for PyPI (torch needs nvidia-*), PyTorch's CPU index (torch+cpu needs nothing) and a local
    wheel folder holding torch 2.13.0+cpu, as on a machine whose pip is configured with find-links."""
    root = tmp_path_factory.mktemp("indexes")
    cuda = wheel(root / "w", "torch", "2.13.0", ("nvidia-cublas==13.1.1.3", "nvidia-cudnn-cu13==9.20.0.48"))
    nvidia = [wheel(root / "w", "nvidia-cublas", "13.1.1.3"), wheel(root / "w", "nvidia-cudnn-cu13", "9.20.0.48")]
    newer = wheel(root / "w", "torch", "2.14.0", ("nvidia-cublas==13.1.1.3",))  # what an unpinned install would take
    cpu = wheel(root / "cpu-wheels", "torch", "2.13.0+cpu")
    local = root / "local-wheels"
    local.mkdir()
    shutil.copy(cpu, local)
    return {
        "pypi": simple_index(root / "pypi", [cuda, newer, *nvidia]),
        "cpu": simple_index(root / "cpu", [cpu]),
        "local": str(local),
    }


def resolve_torch(tmp_path: Path, indexes: dict, *, torch: str, gpu: bool = False, local: bool = False, pypi: str | None = None):
    """What `make torch TORCH=...` would install, by pip's own resolution (dry run): [(name, version, url)]."""
    bin_dir = tmp_path / f"bin-{gpu}"
    bin_dir.mkdir(exist_ok=True)
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    env = {
        "PATH": str(bin_dir),  # nvidia-smi is found or not; everything else is called by its full path
        "HOME": str(tmp_path),
        "PIP_CONFIG_FILE": os.devnull,  # not this machine's pip settings: an ordinary box's
        "PIP_INDEX_URL": pypi or indexes["pypi"],
        "PIP_DRY_RUN": "1",
        "PIP_IGNORE_INSTALLED": "1",
        "PIP_REPORT": str(report),
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **({"PIP_FIND_LINKS": indexes["local"]} if local else {}),
        **{k: os.environ[k] for k in ("PIP_CERT", "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy") if k in os.environ},
    }
    r = subprocess.run(
        [MAKE, "-s", "-C", str(REPO), "torch", f"PIP={sys.executable} -m pip", f"TORCH={torch}", f"TORCH_CPU_INDEX={indexes['cpu']}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    installs = json.loads(report.read_text())["install"]
    return sorted((i["metadata"]["name"], i["metadata"]["version"], i["download_info"]["url"]) for i in installs)


def test_cpu_build_brings_no_cuda_and_cuda_build_does(tmp_path, indexes):
    cpu = resolve_torch(tmp_path, indexes, torch="cpu")
    assert [(n, v) for n, v, _ in cpu] == [("torch", "2.13.0+cpu")] and cpu[0][2].startswith(indexes["cpu"])
    cuda = resolve_torch(tmp_path, indexes, torch="cuda")
    assert [(n, v) for n, v, _ in cuda] == [("nvidia-cublas", "13.1.1.3"), ("nvidia-cudnn-cu13", "9.20.0.48"), ("torch", "2.13.0")]
    assert all(url.startswith(indexes["pypi"]) for _, _, url in cuda)  # pinned: never the newer torch


def test_auto_picks_cuda_only_where_there_is_an_nvidia_gpu(tmp_path, indexes):
    assert [v for n, v, _ in resolve_torch(tmp_path, indexes, torch="auto", gpu=False)] == ["2.13.0+cpu"]
    assert [n for n, _, _ in resolve_torch(tmp_path, indexes, torch="auto", gpu=True)] == ["nvidia-cublas", "nvidia-cudnn-cu13", "torch"]


def test_a_local_wheel_is_used_without_asking_any_index(tmp_path, indexes):
    """A machine whose pip is configured with a local wheel folder and that cannot reach either index."""
    unreachable = (tmp_path / "no-such-index").as_uri()
    for build in ("cpu", "auto"):
        got = resolve_torch(tmp_path, {**indexes, "cpu": unreachable}, torch=build, local=True, pypi=unreachable)
        assert [(n, v) for n, v, _ in got] == [("torch", "2.13.0+cpu")] and got[0][2].startswith(Path(indexes["local"]).as_uri())


def test_a_wrong_torch_choice_is_one_line():
    r = subprocess.run([MAKE, "-s", "-C", str(REPO), "-n", "torch", "TORCH=rocm"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "TORCH must be cpu, cuda or auto, not 'rocm'" in r.stderr


def test_setup_says_what_it_is_doing_and_shows_pip_progress():
    r = subprocess.run([MAKE, "-C", str(REPO), "-n", "-B", "setup", "TORCH=cpu"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    steps = [line for line in r.stdout.splitlines() if line.startswith("echo \"setup ")]
    assert [s.split(":")[0] for s in steps] == ['echo "setup 1/3', 'echo "setup 2/3', 'echo "setup 3/3', 'echo "setup done']
    assert "190 MB" in steps[1] and "minutes" in steps[1] and "1.4 GB" in steps[2] and ".venv/bin/gpt2" in steps[3]
    installs = [line for line in r.stdout.splitlines() if " pip install " in line]
    assert installs and not any(" -q" in line for line in installs)  # pip's own progress is shown


def test_the_distribution_is_not_pypis_gpt2():
    """`pip install gpt2` installs an unrelated project (an API client, 0.0.4); ours is gpt2-lm, imported and
    run as gpt2."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "gpt2-lm" and project["scripts"] == {"gpt2": "gpt2.cli:main"}
    (own,) = [d for d in project["optional-dependencies"]["dev"] if d.startswith("gpt2")]  # the dev extra names itself by the new name
    assert own.startswith("gpt2-lm[") and {"hf", "eval", "train"} <= set(own[len("gpt2-lm["):-1].split(","))
    readme = (REPO / "README.md").read_text()
    assert "The distribution is named **`gpt2-lm`**" in readme and "Do not `pip install gpt2`" in readme


def test_the_readme_tour_runs_as_written_in_a_plain_shell(tmp_path):
    """After `make setup` the tour's first commands work in a new shell, whose PATH does not hold .venv/bin."""
    if not (REPO / ".venv" / "bin" / "activate").is_file():
        pytest.skip("needs the .venv that `make setup` creates")
    readme = (REPO / "README.md").read_text()
    tour = readme.split("A short tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    upto = next(i for i, line in enumerate(tour) if line.startswith("gpt2 presets"))
    script = "\n".join(line.split("#")[0].rstrip() for line in tour[: upto + 1])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GPT2_OFFLINE": "1"}
    r = subprocess.run(["bash", "-euc", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "124,439,808" in r.stdout and "1,557,611,200" in r.stdout


@pytest.mark.network
def test_the_real_indexes(tmp_path):
    """PyPI's torch 2.13.0 brings CUDA; PyTorch's CPU index does not (needs download.pytorch.org and pypi.org)."""
    real = {"pypi": "https://pypi.org/simple", "cpu": "https://download.pytorch.org/whl/cpu", "local": ""}
    cpu = resolve_torch(tmp_path, real, torch="cpu")
    assert ("torch", "2.13.0+cpu") in [(n, v) for n, v, _ in cpu] and not [n for n, _, _ in cpu if n.startswith("nvidia")]
    cuda = resolve_torch(tmp_path, real, torch="cuda")
    assert ("torch", "2.13.0") in [(n, v) for n, v, _ in cuda] and len([n for n, _, _ in cuda if n.startswith("nvidia")]) > 5
