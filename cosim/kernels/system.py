"""GPU system specifications, read from aiconfigurator-core's system YAMLs.

A :class:`SystemSpec` holds what the roofline fallback and the network need about one GPU and its
node: dense tensor-core peaks per numeric format, HBM bandwidth and capacity, and the per-GPU,
per-direction NVLink / scale-out bandwidths. :meth:`SystemSpec.scaled` derives a *what-if* system
(an existing GPU with more FLOP/s or more memory bandwidth); kernel tables of the base GPU are then
rescaled by the roofline (see :mod:`cosim.kernels.roofline`).

>>> h200 = load_system("h200_sxm")            # doctest: +SKIP
>>> h200.peak_flops_per_s("fp8_block") / 1e12  # doctest: +SKIP
1978.0
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cosim.errors import ConfigError

#: Systems this project targets (any YAML in the systems folder loads, these are tested).
SUPPORTED_SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm", "gb200")

#: Numeric format of an op -> key of :attr:`SystemSpec.peak_flops_by_format`.
#: Weight-only formats run their math in the activation format; nvfp4 falls back to fp8 on GPUs
#: without FP4 tensor cores (Hopper), see :meth:`SystemSpec.peak_flops_per_s`.
_PEAK_FORMAT = {
    "bfloat16": "bfloat16",
    "float16": "bfloat16",
    "half": "bfloat16",
    "fp8": "fp8",
    "fp8_block": "fp8",
    "int8": "int8",
    "nvfp4": "fp4",
    "fp4": "fp4",
    "w4a8_mxfp4_mxfp8": "fp8",
    "w4a16_mxfp4": "bfloat16",
}

_ENV_SYSTEMS_DIR = "COSIM_AIC_SYSTEMS_DIR"


def aiconfigurator_systems_dir() -> Path:
    """Folder ``aiconfigurator_core/systems`` of the installed aiconfigurator-core.

    Found without importing the package (``importlib.util.find_spec``); the environment variable
    ``COSIM_AIC_SYSTEMS_DIR`` overrides it. Raises :class:`ConfigError` when neither exists.
    """
    env = os.environ.get(_ENV_SYSTEMS_DIR)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise ConfigError(_ENV_SYSTEMS_DIR, "", f"expected a directory with <system>.yaml files, got {env!r}")
        return path
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "<api>", "aiconfigurator_core",
            "aiconfigurator-core is not installed (pip install aiconfigurator-core==0.12.0) "
            f"and {_ENV_SYSTEMS_DIR} is not set",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "systems"
    if not path.is_dir():
        raise ConfigError(str(path), "", "aiconfigurator-core has no systems/ folder")
    return path


@dataclass(frozen=True)
class SystemSpec:
    """One GPU type and its node, as the roofline and the network see it.

    Bandwidths are bytes per second per GPU **per direction**; FLOP/s are dense tensor-core peaks.
    ``data_system`` names the aiconfigurator system whose measured tables are used (equal to
    ``name`` except for what-if systems), and ``flops_scale`` / ``mem_bw_scale`` record how a
    what-if system differs from it.
    """

    name: str
    data_system: str
    peak_flops_by_format: dict[str, float] = field(hash=False)  # "bfloat16" | "fp8" | "int8" | "fp4" -> FLOP/s
    mem_bw_bytes_per_s: float
    mem_bw_empirical_scaling: float  # achievable fraction of mem_bw for streaming ops (0.8)
    mem_constant_latency_s: float  # fixed cost of a memory-bound op (3 us)
    mem_capacity_bytes: float
    intra_node_bw_bytes_per_s: float  # NVLink through NVSwitch, per GPU per direction
    inter_node_bw_bytes_per_s: float  # scale-out NIC per GPU (GB200: NVLink within the rack)
    inter_rack_bw_bytes_per_s: float | None
    pcie_bw_bytes_per_s: float | None
    gpus_per_node: int
    gpus_per_rack: int | None
    p2p_latency_s: float
    inter_rack_latency_s: float | None
    nccl_version: str | None
    sm_version: int | None
    power_w: float | None
    source: str  # YAML file the spec was read from
    flops_scale: float = 1.0
    mem_bw_scale: float = 1.0
    base: SystemSpec | None = field(default=None, compare=False, repr=False)

    @property
    def is_what_if(self) -> bool:
        """True when this spec was derived by :meth:`scaled` with a scale other than 1."""
        return self.flops_scale != 1.0 or self.mem_bw_scale != 1.0

    def peak_flops_per_s(self, dtype: str) -> float:
        """Dense tensor-core peak for an op in numeric format ``dtype`` (``fp8_block`` -> fp8 ...).

        FP4 formats fall back to the FP8 peak on GPUs without FP4 tensor cores.
        """
        fmt = _PEAK_FORMAT.get(dtype)
        if fmt is None:
            raise ConfigError("<api>", "dtype", f"unknown numeric format {dtype!r}; expected one of {sorted(_PEAK_FORMAT)}")
        for key in (fmt, "fp8", "bfloat16") if fmt == "fp4" else (fmt, "bfloat16"):
            if key in self.peak_flops_by_format:
                return self.peak_flops_by_format[key]
        raise ConfigError(self.source, "gpu.bfloat16_tc_flops", "no tensor-core peak for any format")

    def p2p_bandwidth_bytes_per_s(self, num_gpus: int) -> float:
        """Per-GPU bandwidth tier for a group of ``num_gpus`` GPUs (aiconfigurator's rule)."""
        if num_gpus <= self.gpus_per_node:
            return self.intra_node_bw_bytes_per_s
        if self.gpus_per_rack is not None and num_gpus <= self.gpus_per_rack:
            return self.inter_node_bw_bytes_per_s
        return self.inter_rack_bw_bytes_per_s or self.inter_node_bw_bytes_per_s

    def scaled(self, flops: float = 1.0, mem_bw: float = 1.0, name: str | None = None) -> SystemSpec:
        """A what-if GPU: this one with every FLOP/s peak times ``flops`` and HBM bandwidth times
        ``mem_bw``. Network bandwidths and memory capacity are unchanged.

        Kernel tables loaded for the result are those of :attr:`data_system`; their durations are
        rescaled by the roofline rule in :func:`cosim.kernels.roofline.what_if_factor` and carry
        the source ``"roofline-scaled"``.
        """
        for label, value in (("flops", flops), ("mem_bw", mem_bw)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError("<api>", f"SystemSpec.scaled({label}=...)",
                                  f"expected a positive finite factor, got {value!r}")
        root = self.base if self.base is not None else self
        total_f = self.flops_scale * flops
        total_b = self.mem_bw_scale * mem_bw
        default_name = f"{root.name}-x{total_f:g}flops-x{total_b:g}bw"
        return dataclasses.replace(
            root,
            name=name or default_name,
            peak_flops_by_format={k: v * total_f for k, v in root.peak_flops_by_format.items()},
            mem_bw_bytes_per_s=root.mem_bw_bytes_per_s * total_b,
            flops_scale=total_f,
            mem_bw_scale=total_b,
            base=root,
        )

    def summary(self) -> dict[str, Any]:
        """Plain dict of the main figures (for reports and JSON)."""
        return {
            "name": self.name,
            "data_system": self.data_system,
            "peak_tflops": {k: v / 1e12 for k, v in self.peak_flops_by_format.items()},
            "mem_bw_TBps": self.mem_bw_bytes_per_s / 1e12,
            "mem_capacity_GiB": self.mem_capacity_bytes / 2**30,
            "nvlink_GBps_per_dir": self.intra_node_bw_bytes_per_s / 1e9,
            "scale_out_GBps_per_dir": self.inter_node_bw_bytes_per_s / 1e9,
            "flops_scale": self.flops_scale,
            "mem_bw_scale": self.mem_bw_scale,
        }


def available_systems(systems_dir: Path | None = None) -> list[str]:
    """Names of the system YAMLs in aiconfigurator's systems folder."""
    root = systems_dir or aiconfigurator_systems_dir()
    return sorted(p.stem for p in root.glob("*.yaml") if _has_gpu(p))


def _has_gpu(path: Path) -> bool:
    try:
        with open(path) as fh:
            return "gpu" in (yaml.safe_load(fh) or {})
    except (OSError, yaml.YAMLError):
        return False


def load_system(name: str, systems_dir: str | Path | None = None) -> SystemSpec:
    """Read ``<systems_dir>/<name>.yaml`` (default: aiconfigurator-core's) into a :class:`SystemSpec`.

    Raises :class:`ConfigError` naming the file and field for unknown systems or missing fields.
    """
    root = Path(systems_dir) if systems_dir is not None else aiconfigurator_systems_dir()
    path = root / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        known = available_systems(root) if root.is_dir() else []
        raise ConfigError("<api>", "system", f"unknown system {name!r}; expected one of {known}")
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from exc
    src = str(path)
    gpu = _section(doc, "gpu", src)
    node = _section(doc, "node", src)
    misc = doc.get("misc") or {}

    peaks = {}
    peak_keys = (("bfloat16", "bfloat16_tc_flops"), ("fp8", "fp8_tc_flops"), ("int8", "int8_tc_flops"),
                 ("fp4", "fp4_tc_flops"))
    for fmt, key in peak_keys:
        if gpu.get(key) is not None:
            peaks[fmt] = _positive(gpu, key, src, "gpu")
    if "bfloat16" not in peaks:
        raise ConfigError(src, "gpu.bfloat16_tc_flops", "missing: expected the dense BF16 tensor-core peak in FLOP/s")

    return SystemSpec(
        name=name,
        data_system=name,
        peak_flops_by_format=peaks,
        mem_bw_bytes_per_s=_positive(gpu, "mem_bw", src, "gpu"),
        mem_bw_empirical_scaling=_positive(gpu, "mem_bw_empirical_scaling_factor", src, "gpu", default=1.0),
        mem_constant_latency_s=_nonneg(gpu, "mem_empirical_constant_latency", src, "gpu", default=0.0),
        mem_capacity_bytes=_positive(gpu, "mem_capacity", src, "gpu"),
        intra_node_bw_bytes_per_s=_positive(node, "intra_node_bw", src, "node"),
        inter_node_bw_bytes_per_s=_positive(node, "inter_node_bw", src, "node"),
        inter_rack_bw_bytes_per_s=_positive(node, "inter_rack_bw", src, "node", default=None),
        pcie_bw_bytes_per_s=_positive(node, "pcie_bw", src, "node", default=None),
        gpus_per_node=int(_positive(node, "num_gpus_per_node", src, "node")),
        gpus_per_rack=_int_or_none(node.get("num_gpus_per_rack")),
        p2p_latency_s=_nonneg(node, "p2p_latency", src, "node", default=0.0),
        inter_rack_latency_s=_nonneg(node, "inter_rack_latency", src, "node", default=None),
        nccl_version=str(misc["nccl_version"]) if misc.get("nccl_version") is not None else None,
        sm_version=_int_or_none(gpu.get("sm_version")),
        power_w=float(gpu["power"]) if gpu.get("power") is not None else None,
        source=src,
    )


def _section(doc: dict, key: str, src: str) -> dict:
    sec = doc.get(key)
    if not isinstance(sec, dict):
        raise ConfigError(src, key, f"missing or not a mapping: expected a '{key}:' section")
    return sec


def _positive(sec: dict, key: str, src: str, prefix: str, default: Any = ...) -> Any:
    if sec.get(key) is None:
        if default is ...:
            raise ConfigError(src, f"{prefix}.{key}", "missing: expected a positive number")
        return default
    value = sec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(src, f"{prefix}.{key}", f"expected a positive number, got {value!r}")
    return float(value)


def _nonneg(sec: dict, key: str, src: str, prefix: str, default: Any = ...) -> Any:
    if sec.get(key) is None:
        if default is ...:
            raise ConfigError(src, f"{prefix}.{key}", "missing: expected a number >= 0")
        return default
    value = sec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(src, f"{prefix}.{key}", f"expected a number >= 0, got {value!r}")
    return float(value)


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "None":
        return None
    return int(value)
