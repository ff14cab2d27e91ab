"""gpt2.config: defaults < TOML < command line, type coercion, unknown keys, validation."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from gpt2.config import ConfigError, add_arguments, opt, overrides_from_args, resolve, to_toml


@dataclass
class Optim:
    lr: float = opt(6e-4, "peak learning rate")
    betas: list[float] = opt([0.9, 0.95], "Adam betas")

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError("optim.lr must be positive")


@dataclass
class Run:
    out: Path = opt(help="output directory")
    steps: int = opt(100, "optimizer steps")
    compile: bool = opt(False, "torch.compile the model")
    dtype: Literal["float32", "bfloat16"] = opt("float32", "compute dtype")
    seed: int | None = opt(None, "random seed")
    optim: Optim = field(default_factory=Optim)


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Run)
    return overrides_from_args(parser.parse_args(argv))


def test_layers_defaults_then_toml_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('out = "a"\nsteps = 7\n[optim]\nlr = 1e-3\n')
    cfg = resolve(Run, parse(["--steps", "9", "--optim.betas", "0.8,0.9"]), toml)
    assert cfg.out == Path("a") and cfg.steps == 9  # flag beats file
    assert cfg.optim.lr == 1e-3 and cfg.optim.betas == [0.8, 0.9]  # file beats default
    assert cfg.compile is False and cfg.seed is None


def test_flag_spellings_and_coercion():
    cfg = resolve(Run, parse(["--out", "o", "--compile", "--dtype", "bfloat16", "--seed", "3", "--optim.lr=2e-4"]))
    assert cfg.compile is True and cfg.dtype == "bfloat16" and cfg.seed == 3 and cfg.optim.lr == 2e-4
    assert resolve(Run, parse(["--out", "o", "--compile=false"])).compile is False


@pytest.mark.parametrize(
    "toml, message",
    [
        ('out = "a"\nsteps = "many"', "'steps' in"),
        ('out = "a"\nstep = 3', "unknown key 'step'"),
        ('out = "a"\n[optim]\nlearning_rate = 1', "unknown key 'optim.learning_rate'"),
        ('out = "a"\n[optim]\nlr = -1.0', "optim.lr must be positive"),
        ('out = "a"\ndtype = "fp8"', "expected one of float32, bfloat16"),
        ('out = "a"\ncompile = "perhaps"', "expected true or false"),
        ("steps = 3", "missing required setting --out"),
        ("out = [", "not valid TOML"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        resolve(Run, {}, path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(Run, {}, tmp_path / "none.toml")


def test_to_toml_round_trips(tmp_path):
    cfg = resolve(Run, parse(["--out", "x y", "--steps", "5", "--optim.lr", "0.25"]))
    text = to_toml(cfg)
    assert resolve(Run, {}, _write(tmp_path, text)) == cfg
    assert tomllib.loads(text)["optim"]["lr"] == 0.25


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path
