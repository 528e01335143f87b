"""Measured communication tables of aiconfigurator-core, as typed records (for validation only).

These rows are not used for timing: cosim simulates the network. They are the ground truth the
network backends are checked against. Units are in the field names: ``_s`` seconds, ``_bytes``
bytes, ``_bytes_per_s`` bytes per second.

* :func:`nccl_records`: nccl-tests runs inside one node (2, 4, 8 GPUs; 2, 4 on GB200). Message
  sizes in the parquet are **element counts**; ``message_bytes = elements x dtype bytes`` (``half``
  2, ``int8`` 1). Only the rows in the file are returned: aiconfigurator's engine extrapolates NCCL
  beyond the measured GPU counts, and those values are never produced here. Rows whose GPU count
  exceeds the measured intra-node range (8, or the node size) are dropped. Repeated measurements
  of one key (the h200 ``2.26.2`` file holds every key twice) are reduced to their median with
  ``repeats`` counting them.
* :func:`deepep_normal_records` / :func:`deepep_ll_records`: DeepEP normal (prefill,
  high-throughput) and low-latency (decode) dispatch/combine from sglang's collector, microseconds
  converted to seconds. ``num_tokens`` is per rank. The EP size is implied: all GPUs of
  ``node_num`` nodes (8 per HGX node). Defaults follow the reference: sglang ``0.5.12`` (single
  node) and, on h200, ``0.5.6.post2`` (node_num 1, 2, 4, 8 -- the only multi-node data).
* :func:`custom_allreduce_records`: the frameworks' own all-reduce kernels (one node), milliseconds
  converted to seconds, element counts to bytes.
* :func:`nvlink_alltoall_records`: TensorRT-LLM's NVLink MoE all-to-all on gb200 (EP 2-64 inside
  one NVL72 rack), milliseconds converted to seconds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from statistics import median
from typing import Any

import pyarrow.parquet as pq

from cosim.errors import ConfigError
from cosim.kernels.system import aiconfigurator_systems_dir, load_system

US_TO_S = 1e-6
MS_TO_S = 1e-3
#: Bytes per element of the NCCL dtypes in ``nccl_perf``.
NCCL_DTYPE_BYTES = {"half": 2, "float16": 2, "bfloat16": 2, "int8": 1, "fp8": 1, "float": 4, "float32": 4}
#: nccl-tests coverage: never more than one 8-GPU node.
MAX_MEASURED_NCCL_GPUS = 8


@dataclass(frozen=True)
class NcclRecord:
    """One measured NCCL collective (nccl-tests, out-of-place) on ``num_gpus`` GPUs of one node."""

    system: str
    nccl_version: str  # folder the row came from
    op: str  # all_reduce | all_gather | reduce_scatter | alltoall
    dtype: str  # half | int8
    num_gpus: int
    message_elements: int  # total buffer, elements
    message_bytes: int  # total buffer, bytes
    latency_s: float
    repeats: int  # measurements merged (median)


@dataclass(frozen=True)
class DeepEPNormalRecord:
    """DeepEP normal-mode dispatch and combine for one shape and SM budget."""

    system: str
    sglang_version: str  # folder the row came from
    device: str
    node_num: int
    hidden_size: int
    num_tokens: int  # per rank
    topk: int
    num_experts: int
    dispatch_sms: int
    dispatch_transmit_s: float
    dispatch_notify_s: float
    combine_sms: int
    combine_transmit_s: float
    combine_notify_s: float

    @property
    def dispatch_s(self) -> float:
        return self.dispatch_transmit_s + self.dispatch_notify_s

    @property
    def combine_s(self) -> float:
        return self.combine_transmit_s + self.combine_notify_s


@dataclass(frozen=True)
class DeepEPLowLatencyRecord:
    """DeepEP low-latency-mode dispatch and combine for one shape."""

    system: str
    sglang_version: str
    device: str
    node_num: int
    hidden_size: int
    num_tokens: int  # per rank
    topk: int
    num_experts: int
    dispatch_s: float
    dispatch_bandwidth_bytes_per_s: float
    combine_s: float
    combine_bandwidth_bytes_per_s: float


def nccl_records(system: str, nccl_version: str | None = None, systems_dir: str | Path | None = None,
                 merge_repeats: bool = True) -> list[NcclRecord]:
    """Measured NCCL rows of ``system`` from ``comm/nccl/<nccl_version>`` (default: the version the
    system YAML names, which is the one aiconfigurator's engine reads)."""
    root = Path(systems_dir) if systems_dir is not None else aiconfigurator_systems_dir()
    spec = load_system(system, root)
    version = nccl_version or spec.nccl_version
    path = root / "data" / system / "comm" / "nccl" / str(version) / "nccl_perf.parquet"
    if not path.is_file():
        raise ConfigError("<api>", "nccl_version", f"no nccl_perf table at {path}; available: "
                          f"{_folders(root / 'data' / system / 'comm' / 'nccl')}")
    cols = _read(path, ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency"))
    max_gpus = min(MAX_MEASURED_NCCL_GPUS, spec.gpus_per_node)
    groups: dict[tuple, list[float]] = defaultdict(list)
    names = ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency")
    for op, dtype, n, elems, lat in zip(*(cols[c] for c in names)):
        if lat is None or not lat > 0 or n > max_gpus:
            continue
        if dtype not in NCCL_DTYPE_BYTES:
            raise ConfigError(str(path), "nccl_dtype",
                              f"unknown NCCL dtype {dtype!r}; expected one of {sorted(NCCL_DTYPE_BYTES)}")
        groups[(op, dtype, int(n), int(elems))].append(float(lat) * MS_TO_S)
    out = []
    for (op, dtype, n, elems), lats in sorted(groups.items()):
        samples = [median(lats)] if merge_repeats else lats
        for lat in samples:
            out.append(NcclRecord(system, str(version), op, dtype, n, elems, elems * NCCL_DTYPE_BYTES[dtype], lat,
                                  len(lats) if merge_repeats else 1))
    return out


def deepep_normal_records(system: str, sglang_version: str = "0.5.12", node_num: int | None = None,
                          systems_dir: str | Path | None = None, same_device: bool = True) -> list[DeepEPNormalRecord]:
    """DeepEP normal-mode rows of ``comm/sglang/<sglang_version>/wideep_deepep_normal_perf``.

    ``same_device`` drops rows measured on another GPU (the h200 ``0.5.6.post2`` file mixes H100
    and H200 rows). ``node_num`` keeps one node count.
    """
    path = _deepep_path(system, sglang_version, "wideep_deepep_normal_perf.parquet", systems_dir)
    names = ("node_num", "hidden_size", "num_token", "num_topk", "num_experts", "dispatch_sms", "dispatch_transmit_us",
             "dispatch_notify_us", "combine_sms", "combine_transmit_us", "combine_notify_us")
    cols = _read(path, names, optional=("device",))
    out = []
    for i, device in _kept_rows(system, cols, same_device, node_num):
        out.append(DeepEPNormalRecord(
            system, sglang_version, device, int(cols["node_num"][i]), int(cols["hidden_size"][i]),
            int(cols["num_token"][i]), int(cols["num_topk"][i]), int(cols["num_experts"][i]),
            int(cols["dispatch_sms"][i]), _us(cols["dispatch_transmit_us"][i]), _us(cols["dispatch_notify_us"][i]),
            int(cols["combine_sms"][i]), _us(cols["combine_transmit_us"][i]), _us(cols["combine_notify_us"][i])))
    return out


def deepep_ll_records(system: str, sglang_version: str = "0.5.12", node_num: int | None = None,
                      systems_dir: str | Path | None = None, same_device: bool = True) -> list[DeepEPLowLatencyRecord]:
    """DeepEP low-latency rows of ``comm/sglang/<sglang_version>/wideep_deepep_ll_perf``
    (bandwidths converted from GB/s to bytes/s)."""
    path = _deepep_path(system, sglang_version, "wideep_deepep_ll_perf.parquet", systems_dir)
    names = ("node_num", "hidden_size", "num_token", "num_topk", "num_experts", "dispatch_avg_t_us",
             "dispatch_bandwidth_gbps", "combine_avg_t_us", "combine_bandwidth_gbps")
    cols = _read(path, names, optional=("device",))
    out = []
    for i, device in _kept_rows(system, cols, same_device, node_num):
        out.append(DeepEPLowLatencyRecord(
            system, sglang_version, device, int(cols["node_num"][i]), int(cols["hidden_size"][i]),
            int(cols["num_token"][i]), int(cols["num_topk"][i]), int(cols["num_experts"][i]),
            _us(cols["dispatch_avg_t_us"][i]), float(cols["dispatch_bandwidth_gbps"][i]) * 1e9,
            _us(cols["combine_avg_t_us"][i]), float(cols["combine_bandwidth_gbps"][i]) * 1e9))
    return out


@dataclass(frozen=True)
class CustomAllReduceRecord:
    """One measured framework all-reduce (TensorRT-LLM, sglang or vLLM custom kernels, CUDA
    graphs, compute subtracted) on ``num_gpus`` GPUs of one node."""

    system: str
    framework: str
    version: str  # folder the row came from
    implementation: str  # trtllm (AUTO strategy), sglang_graph, vllm_graph ...
    dtype: str
    num_gpus: int
    message_elements: int
    message_bytes: int
    latency_s: float


#: Rows whose ``implementation``/``backend`` is one of these are the CUDA-graph (served) variants.
_GRAPH_IMPLEMENTATIONS = ("trtllm", "sglang_graph", "vllm_graph")


def custom_allreduce_records(system: str, framework: str = "trtllm", version: str | None = None,
                             systems_dir: str | Path | None = None) -> list[CustomAllReduceRecord]:
    """Measured rows of ``comm/<framework>/<version>/custom_allreduce_perf`` (default: the newest
    folder that has the table); ``message_size`` is an element count (bf16: 2 bytes each). Only
    the CUDA-graph variants are kept (what a served model runs)."""
    path = _framework_table(system, framework, version, "custom_allreduce_perf.parquet", systems_dir)
    chosen = path.parent.name
    cols = _read(path, ("allreduce_dtype", "num_gpus", "message_size", "latency"),
                 optional=("implementation", "backend"))
    impl = cols.get("implementation") or cols.get("backend") or [framework] * len(cols["latency"])
    out = []
    for dtype, n, elems, lat, how in zip(cols["allreduce_dtype"], cols["num_gpus"], cols["message_size"],
                                         cols["latency"], impl):
        if lat is None or not lat > 0 or how not in _GRAPH_IMPLEMENTATIONS:
            continue
        nbytes = NCCL_DTYPE_BYTES.get(dtype)
        if nbytes is None:
            raise ConfigError(str(path), "allreduce_dtype", f"unknown dtype {dtype!r}")
        out.append(CustomAllReduceRecord(system, framework, chosen, how, dtype, int(n), int(elems),
                                         int(elems) * nbytes, float(lat) * MS_TO_S))
    return out


@dataclass(frozen=True)
class NvlinkAllToAllRecord:
    """TensorRT-LLM's NVLink MoE all-to-all (``trtllm_alltoall_perf``: multi-node NVLink, e.g.
    across the trays of a GB200 NVL72 rack) for one phase, kernel, dtype and EP size."""

    system: str
    version: str  # folder the row came from
    kernel: str  # NVLinkTwoSided | NVLinkOneSided
    phase: str  # prepare | dispatch | combine | combine_low_precision
    dtype: str  # bfloat16 | fp8 | nvfp4
    ep_size: int
    num_tokens: int  # per rank
    hidden_size: int
    topk: int
    num_experts: int
    distribution: str
    latency_s: float


def nvlink_alltoall_records(system: str = "gb200", version: str | None = None,
                            systems_dir: str | Path | None = None) -> list[NvlinkAllToAllRecord]:
    """Measured rows of ``comm/trtllm/<version>/trtllm_alltoall_perf`` (default: the newest folder
    with the table; only gb200 has it), milliseconds converted to seconds, ``alltoall_`` dropped
    from the phase names."""
    path = _framework_table(system, "trtllm", version, "trtllm_alltoall_perf.parquet", systems_dir)
    chosen = path.parent.name
    names = ("op_name", "kernel_source", "moe_dtype", "moe_ep_size", "num_tokens", "hidden_size", "topk",
             "num_experts", "distribution", "latency")
    cols = _read(path, names)
    out = []
    for op, kernel, dtype, ep, tokens, hidden, topk, experts, dist, lat in zip(*(cols[c] for c in names)):
        if lat is None or not lat > 0:
            continue
        out.append(NvlinkAllToAllRecord(system, chosen, kernel, op.removeprefix("alltoall_"), dtype, int(ep),
                                        int(tokens), int(hidden), int(topk), int(experts), dist,
                                        float(lat) * MS_TO_S))
    return out


def _framework_table(system: str, framework: str, version: str | None, file: str,
                     systems_dir: str | Path | None) -> Path:
    """Path of ``comm/<framework>/<version>/<file>`` of ``system`` (default version: the newest
    folder that has the file), or a ConfigError listing the folders that have it."""
    root = Path(systems_dir) if systems_dir is not None else aiconfigurator_systems_dir()
    load_system(system, root)  # validates the name
    base = root / "data" / system / "comm" / framework
    have = [v for v in _folders(base) if (base / v / file).is_file()]
    if not have:
        raise ConfigError("<api>", "framework", f"no {file} for {system} / {framework}")
    chosen = version or max(have, key=_version_key)
    if chosen not in have:
        raise ConfigError("<api>", "version", f"no {file} for {system} / {framework} {chosen!r}; available: {have}")
    return base / chosen / file


def _version_key(v: str) -> tuple:
    """Natural order of version folders (1.3.0rc20 > 1.3.0rc10 > 1.2.0rc5; 0.5.14 > 0.5.9)."""
    return tuple((1, int(x), "") if x.isdigit() else (0, 0, x) for x in re.findall(r"\d+|[a-z]+", v))


def deepep_default_versions(system: str) -> list[str]:
    """sglang folders with DeepEP tables cosim validates against: 0.5.12, plus the multi-node
    0.5.6.post2 on h200_sxm."""
    return ["0.5.12", "0.5.6.post2"] if system == "h200_sxm" else ["0.5.12"]


def to_dataframe(records: list[Any]):
    """Records as a pandas DataFrame (pandas imported lazily; columns keep their unit suffixes)."""
    import pandas as pd

    if not records:
        return pd.DataFrame()
    return pd.DataFrame([asdict(r) for r in records], columns=[f.name for f in fields(records[0])])


# ---------------------------------------------------------------------- helpers


def _deepep_path(system: str, version: str, file: str, systems_dir: str | Path | None) -> Path:
    root = Path(systems_dir) if systems_dir is not None else aiconfigurator_systems_dir()
    load_system(system, root)  # validates the name
    path = root / "data" / system / "comm" / "sglang" / version / file
    if not path.is_file():
        have = [v for v in _folders(root / "data" / system / "comm" / "sglang")
                if (root / "data" / system / "comm" / "sglang" / v / file).is_file()]
        raise ConfigError("<api>", "sglang_version", f"no {file} for {system} at sglang {version!r}; available: {have}")
    return path


def _read(path: Path, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, list]:
    present = set(pq.read_schema(path).names)
    for col in names:
        if col not in present:
            raise ConfigError(str(path), col, f"expected column {col!r} in the aiconfigurator table")
    use = list(names) + [c for c in optional if c in present]
    table = pq.ParquetFile(path).read(columns=use, use_threads=False)
    return {c: table.column(c).to_pylist() for c in use}


def _kept_rows(system: str, cols: dict[str, list], same_device: bool, node_num: int | None):
    """(row index, device) of the DeepEP rows measured on ``system``'s GPU with ``node_num`` nodes."""
    devices = cols.get("device") or [""] * len(cols["node_num"])
    for i, row_nodes in enumerate(cols["node_num"]):
        device = devices[i] or ""
        if _keep(system, device, same_device, node_num, row_nodes):
            yield i, device


def _keep(system: str, device: str, same_device: bool, node_num: int | None, row_nodes: int) -> bool:
    if node_num is not None and row_nodes != node_num:
        return False
    return not same_device or not device or _device_matches(system, device)


def _device_matches(system: str, device: str) -> bool:
    token = system.split("_")[0].upper()  # h200_sxm -> H200, gb200 -> GB200
    return token in re.split(r"[^A-Za-z0-9]+", device.upper())


def _us(x: Any) -> float:
    return float(x) * US_TO_S


def _folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
