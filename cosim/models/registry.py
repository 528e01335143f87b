"""Find a model config: a path, or a name bundled with aiconfigurator-core.

aiconfigurator-core ships Hugging Face configs as ``<org>--<name>_config.json`` (plus optional
``<org>--<name>_hf_quant_config.json``) in ``aiconfigurator_core/model_configs``; the environment
variable ``AICONFIGURATOR_MODEL_CONFIGS_PATH`` points elsewhere, as it does for aiconfigurator.
The package is imported lazily, only when a name (not a path) is given.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from cosim.errors import ConfigError
from cosim.models._fields import read_json_file
from cosim.models.loader import parse_config
from cosim.models.spec import ModelSpec

_SUFFIX = "_config.json"
_QUANT_SUFFIX = "_hf_quant_config.json"


def bundled_configs_dir() -> Path | None:
    """The folder of bundled configs, or None if aiconfigurator-core is not installed."""
    configured = os.environ.get("AICONFIGURATOR_MODEL_CONFIGS_PATH")
    if configured:
        return Path(configured)
    try:
        import aiconfigurator_core
    except ImportError:
        return None
    return Path(aiconfigurator_core.__file__).parent / "model_configs"


def list_bundled_models() -> list[str]:
    """HF ids (``org/name``) of the configs bundled with aiconfigurator-core (empty if absent)."""
    folder = bundled_configs_dir()
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name[: -len(_SUFFIX)].replace("--", "/", 1) for p in folder.iterdir()
                  if p.name.endswith(_SUFFIX) and not p.name.endswith(_QUANT_SUFFIX))


def load_model(name_or_path: str | os.PathLike[str]) -> ModelSpec:
    """Load a model config into a :class:`ModelSpec`.

    ``name_or_path`` is one of:

    - a path to a ``config.json`` file, or to a directory containing ``config.json`` (an
      ``hf_quant_config.json`` beside it is read too);
    - a Hugging Face id bundled with aiconfigurator-core, e.g. ``"deepseek-ai/DeepSeek-V3"``;
    - a bundled file name (``"deepseek-ai--DeepSeek-V3_config.json"``) or a bare model name
      (``"DeepSeek-V3"``) when it matches exactly one bundled config.

    Raises:
        ConfigError: the file is missing or invalid, or the name is unknown (the message lists
            close matches among the bundled configs).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ConfigError(str(path), "config.json", "directory has no config.json")
        quant = path / "hf_quant_config.json"
        return _load_file(config_path, path.name, quant if quant.is_file() else None)
    if path.is_file():
        if path.name.endswith(_SUFFIX):  # aiconfigurator naming: <org>--<name>_config.json
            stem = path.name[: -len(_SUFFIX)]
            quant = path.with_name(stem + _QUANT_SUFFIX)
        else:
            stem = path.parent.resolve().name if path.name == "config.json" else path.stem
            quant = path.with_name("hf_quant_config.json")
        return _load_file(path, stem.replace("--", "/", 1), quant if quant.is_file() else None)
    if text.endswith(".json") and os.sep in text:
        raise ConfigError(text, "", "file not found")
    return _load_bundled(text)


def _load_bundled(name: str) -> ModelSpec:
    folder = bundled_configs_dir()
    if folder is None:
        raise ConfigError("<api>", "model", f"{name!r} is not a file or directory, and aiconfigurator-core "
                                            "(which bundles model configs) is not installed; pass a path to "
                                            "a config.json")
    known = list_bundled_models()
    key = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name
    key = key.replace("--", "/", 1)
    matches = [m for m in known if m.lower() == key.lower()]
    if not matches and "/" not in key:
        matches = [m for m in known if m.split("/", 1)[-1].lower() == key.lower()]
    if len(matches) != 1:
        close = matches or _close_matches(key, known)
        hint = f"; close matches: {', '.join(close)}" if close else \
            "; call cosim.models.list_bundled_models() for the full list"
        what = "is ambiguous" if len(matches) > 1 else "is not a file, directory or bundled model"
        raise ConfigError("<api>", "model", f"{name!r} {what} (bundled configs in {folder}){hint}")
    file_key = matches[0].replace("/", "--", 1)
    quant = folder / f"{file_key}{_QUANT_SUFFIX}"
    return _load_file(folder / f"{file_key}{_SUFFIX}", matches[0], quant if quant.is_file() else None)


def _close_matches(key: str, known: list[str], limit: int = 6) -> list[str]:
    """Bundled ids close to ``key``, comparing full ids and bare names (case-insensitive)."""
    lowered = {m.lower(): m for m in known}
    bare = {m.split("/", 1)[-1].lower(): m for m in known}
    query = key.lower()
    hits = difflib.get_close_matches(query, list(lowered), n=limit, cutoff=0.5)
    hits += difflib.get_close_matches(query.split("/", 1)[-1], list(bare), n=limit, cutoff=0.5)
    found = [lowered[h] if h in lowered else bare[h] for h in hits]
    found += [m for m in known if query.split("/", 1)[-1] in m.lower()]
    return list(dict.fromkeys(found))[:limit]


def _load_file(path: Path, name: str, quant_path: Path | None) -> ModelSpec:
    config = _read_json(path)
    quant = _read_json(quant_path) if quant_path else None
    return parse_config(config, source=str(path), name=name, quant_config=quant)


def _read_json(path: Path) -> Any:
    """The parsed JSON of ``path``, read strictly (:func:`cosim.models._fields.read_json_file`)."""
    return read_json_file(path)
