"""The machinery of configuration: fields with help text, TOML, overrides, coercion, argparse.

Values are resolved in three layers: defaults, then a TOML file (`--config
FILE.toml`), then command-line overrides (`--field value`, or
`--section.field=value` for nested sections). Unknown keys are errors and
values are coerced to the field's type.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from gpt2.errors import ConfigError

_REQUIRED = dataclasses.MISSING


def opt(default: Any = _REQUIRED, help: str = "", *, factory: Any = None, flag: str | None = None) -> Any:
    """A dataclass field with help text (and an optional short flag such as '-o')."""
    meta = {"help": help, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------
# type handling


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML or command-line value to the annotated type `tp`."""
    try:
        return _convert(value, tp)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _convert(value: Any, tp: Any) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise ValueError("must not be empty")
    tp = inner
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (list, tuple):
        item = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        if item is not str:  # numbers and paths may also be given as "a,b,c"
            value = [x for v in value for x in (v.split(",") if isinstance(v, str) else [v]) if x != ""]
        items = [_convert(v, item) for v in value]
        return items if origin is list else tuple(items)
    if tp is bool:
        return _parse_bool(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(str(value).replace("_", "")) if isinstance(value, str) else int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if tp is Path:
        return Path(value).expanduser()
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be between 0 and 2**63 - 1, got {seed}")


def check_output_file(path: Path | None, force: bool, flag: str = "--output") -> None:
    """Refuse, before any work, an output file that exists (unless `force`), is a directory, or has no folder."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{flag} {path} exists; pass --force to replace it, or choose another file")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: the folder {path.parent} does not exist")


# ----------------------------------------------------------------------------
# dict <-> dataclass


def from_dict(cls: type, data: dict[str, Any], source: str = "config", prefix: str = "") -> Any:
    """Build `cls` from a (possibly nested) dict, rejecting unknown keys."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(prefix + name for name in fields)
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' in {source} (valid keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        tp = hints[name]
        flag = "--" + (prefix + name).replace("_", "-")
        where = flag if source == "command line" else f"'{prefix}{name}' in {source}"
        if dataclasses.is_dataclass(tp):
            section = data.get(name, {})
            if isinstance(section, tp):
                kwargs[name] = section
                continue
            if not isinstance(section, dict):
                raise ConfigError(f"{where} must be a table of settings, got {section!r}")
            kwargs[name] = from_dict(tp, section, source, prefix=f"{prefix}{name}.")
        elif name in data:
            value = kwargs[name] = _coerce(data[name], tp, where)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
                raise ConfigError(f"{where} is too large ({value}); it must fit in 64 bits")
        elif f.default is _REQUIRED and f.default_factory is _REQUIRED:
            raise ConfigError(f"missing required setting {flag} (or '{prefix}{name}' in a --config file)")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain TOML/JSON-friendly values (paths as strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def to_toml(cfg: Any) -> str:
    """Serialise a config (flat keys first, then one table per section); None values are omitted."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} to TOML")

    def table(d: dict[str, Any], name: str) -> list[str]:
        lines = [f"[{name}]"] if name else []
        lines += [f"{k} = {value(v)}" for k, v in d.items() if v is not None and not isinstance(v, dict)]
        for k, v in d.items():
            if isinstance(v, dict):
                lines += [""] + table(v, f"{name}.{k}" if name else k)
        return lines

    return "\n".join(table(to_dict(cfg), "")) + "\n"


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text, so not a TOML file; check the path") from None


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    for s in sections:
        data = data.setdefault(s, {})
    data[leaf] = value


def resolve(cls: type, overrides: dict[str, Any], config_file: Path | None = None) -> Any:
    """defaults < TOML file < overrides (keys are dotted paths, e.g. 'optim.lr')."""
    data = load_toml(config_file) if config_file else {}
    source = str(config_file) if config_file else "command line"
    for key, value in overrides.items():
        _set_path(data, key, value)
    if overrides and config_file:
        source = f"{config_file} or the command line"
    return from_dict(cls, data, source)


# ----------------------------------------------------------------------------
# argparse


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per field: `--vocab-size` (also `--vocab_size`); nested sections give `--optim.lr`."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            add_arguments(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        dest = prefix + f.name
        names = ["--" + dest.replace("_", "-")]
        if "_" in dest:
            names.append("--" + dest)
        if f.metadata.get("flag"):
            names.insert(0, f.metadata["flag"])
        inner, _ = _unwrap_optional(tp)
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        help_text = f.metadata.get("help", "")
        if f.default is not _REQUIRED:
            if f.default not in (None, "", [], ()):
                help_text += f" (default: {f.default})"
        elif f.default_factory is not _REQUIRED:
            default = f.default_factory()
            if default:
                help_text += f" (default: {' '.join(map(str, default))})"
        else:
            help_text += " (required)"
        kwargs["help"] = help_text.replace("%", "%%")
        origin = typing.get_origin(inner)
        if origin in (list, tuple):
            kwargs["nargs"] = "+"
            kwargs["metavar"] = f.name.upper().rstrip("S") if f.name.endswith("s") else f.name.upper()
        elif inner is bool:
            kwargs["nargs"] = "?"
            kwargs["const"] = "true"
            kwargs["metavar"] = "BOOL"
        elif origin is Literal:
            kwargs["choices"] = typing.get_args(inner)
        else:
            kwargs["metavar"] = {int: "N", float: "X", Path: "PATH"}.get(inner, "TEXT")
        parser.add_argument(*names, **kwargs)


def overrides_from_args(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in skip and not k.startswith("_")}
