"""Step-time model of one deployment: simulated grid, interpolation, save and reload.

A serving simulation asks for thousands of step times of the same deployment (decode batches at
every context length, mixed chunked-prefill steps of every shape). Simulating each one costs
0.1-1 s; :class:`StepTimeModel` simulates a grid once (with one :class:`StepSimulator`, so the
network memo is shared by the whole grid) and answers every query from it in microseconds.
Every answer says whether it *is* a simulated grid point (``simulated``) or comes from
interpolation (``interpolated``). The method, the accuracy measured on held-out simulated steps
and how to reuse a saved model are in ``docs/step-model.md``.

**Queries** (``batch`` decode requests per attention rank, their ``context`` tokens, prefill
``chunks`` of ``(prefix_tokens, new_tokens)``), each the step ``dataclasses.replace(base,
batch_per_rank=batch, prefix_tokens=context, prefill_chunks=chunks)``:

* **Decode** (no chunks): from the simulated grid ``T(b, c)`` over ``grid.decode_batches x
  grid.contexts``. What is interpolated is the residual ``T(b, c) - W_dec(b, c)``, where
  ``W_dec`` is the step's per-request attention work (the kernels the builder costs per request
  class, :data:`cosim.trace.builder.PER_REQUEST_OPS`, summed over all layers and MTP passes) read
  from the kernel tables on a finer grid; the residual (GEMMs, MoE, dispatch/combine, head) hardly
  depends on the context, so the context grid can be coarse. Interpolation is bilinear in
  ``(b, c)`` inside cells of a log-spaced grid: exact for step times affine in the batch and for
  attention work linear in batch x context.
* **Mixed** (chunks; colocated layout without two-batch overlap or MTP): the builder costs a mixed
  step's GEMMs, norms, MoE and dispatch/combine on the *total* tokens ``N = batch + sum(new)``
  and its attention per request class. So

      T(batch, context, chunks) = base(N) + H(batch + len(chunks)) + W_dec(batch, context)
                                  + sum_i W_pre(new_i, prefix_i)

  with ``base(N) = T_anchor(N) - H(2) - W_dec(1, 0) - W_pre(N - 1, 0)`` from simulated *anchor*
  mixed steps (one decode request at context 0 plus one chunk of ``N - 1`` new tokens, N over
  ``grid.mixed_tokens``), interpolated linearly in N; ``H(r)`` is the final norm and LM head over
  ``r`` requests; ``W_pre(n, p)`` the per-request attention work of a chunk, bilinear on a fine
  ``(n, p)`` kernel grid. Scheduling effects beyond this sum (per-rank expert stragglers, which
  depend on the routing sample of the total tokens, are in ``base``) are what the held-out check
  in ``benchmarks/step_model.py`` measures.

* **AFD decode** (layout ``afd``, ``m`` micro-batches of ``ceil`` / ``floor(batch / m)``
  requests): from the per-micro-batch attention-side compute ``a(b, c)`` (attention block, router,
  embedding and LM head as the AFD builder puts them on an attention rank; per-request part on a
  fine ``(b, c)`` grid, per-token part on an integer axis) the model forms the step's two
  pipeline bounds: ``A = sum_j a(b_j, c)`` (the attention group is busy all the step) and
  ``a(b_max, c) + Q(batch)`` (one micro-batch's path through every layer, its A2F, FFN and F2A
  round trips in ``Q``, which does not depend on the context: ``Q(B) = min_c T(B, c) -
  a(b_max, c)`` at each grid batch, linear in the batch), and interpolates the residual
  ``T - max(A, a(b_max) + Q)`` bilinearly. Other layouts with overlap (two-batch overlap)
  interpolate the step time itself (``method`` ``opaque``).

**Range.** Queries outside the grid (batch outside the decode batches -- AFD drops grid batches
below ``m`` and refuses them --, context or chunk
prefix above the largest context, total mixed tokens above the largest anchor) are refused with
a :class:`ConfigError` naming the limit: build the model with a wider :class:`StepGrid`. Nothing
is extrapolated or clipped.

**Reuse.** :meth:`StepTimeModel.save` writes JSON with a fingerprint of the deployment (base
spec without the query fields and GPU numbers), its placement's path profile, kernel tables,
topology, backend, overheads and grid;
:meth:`StepTimeModel.load` recomputes it from the objects it is given and refuses a file made for
anything else (``ConfigError`` naming the parts that differ).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import math
import time
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np

from cosim.engine.overheads import DEFAULT_OVERHEADS, CommOverheads
from cosim.engine.simulator import StepSimulator
from cosim.errors import ConfigError
from cosim.identity_cache import IdentityCache
from cosim.topology import Topology
from cosim.topology.placement import placement_signature
from cosim.trace.afd import MicroBatch, attention_parallel, attention_side_ops, ffn_rank_seconds, partition
from cosim.trace.builder import (
    PER_REQUEST_OPS, PrefillChunk, StepSpec, decode_batch, head_ops, layer_op_lists, mtp_layer_index,
)

Source = Literal["simulated", "interpolated"]
FORMAT_VERSION = 2  # 2: the AFD FFN-side table on its own axis (StepGrid.work_ffn_tokens)


def ladder(lo: int, hi: int, per_octave: int) -> tuple[int, ...]:
    """Integers from ``lo`` to ``hi`` (both included), ``per_octave`` log-spaced points per
    factor of 2 (rounded, duplicates dropped)."""
    if lo < 1 or hi < lo or per_octave < 1:
        raise ConfigError("<api>", "grid", f"bad ladder {lo}..{hi} with {per_octave} points per octave")
    steps = int(math.ceil(math.log2(hi / lo) * per_octave))
    pts = {lo, hi} | {int(round(lo * 2 ** (i / per_octave))) for i in range(steps + 1)}
    return tuple(sorted(p for p in pts if lo <= p <= hi))


def _with_zero(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted({0, *values}))


@dataclass(frozen=True)
class StepGrid:
    """The points a :class:`StepTimeModel` simulates, and the resolution of its kernel tables.

    Attributes:
        decode_batches: decode requests per attention rank of the simulated decode steps.
        contexts: context tokens of the simulated decode steps (the largest also bounds the
            prefixes of prefill chunks).
        mixed_tokens: total tokens of the simulated anchor mixed steps (1 decode request + one
            chunk of ``N - 1`` tokens, so every value is >= 2; empty: no mixed queries).
        work_per_octave: points per octave of the kernel-work tables (attention work of decode
            requests and prefill chunks, LM head); they cost kernel look-ups only.
        ffn_tokens_exact / ffn_per_octave: the token axis of an AFD mixed step's FFN-side table
            (:meth:`work_ffn_tokens`): every integer up to ``ffn_tokens_exact``, then
            ``ffn_per_octave`` points per octave. Each of its points draws a routing sample of
            that many tokens per attention rank (the cost grows with the tokens), and the
            function is a sample of a smooth one: linear interpolation between the points is
            within the sample's own point-to-point noise (``docs/step-model.md``).
    """

    decode_batches: tuple[int, ...] = ladder(1, 512, 2)
    contexts: tuple[int, ...] = (0, 512, 2048, 8192, 32768, 131072)
    mixed_tokens: tuple[int, ...] = ladder(2, 8192, 2)
    work_per_octave: int = 8
    ffn_tokens_exact: int = 64
    ffn_per_octave: int = 32

    def __post_init__(self) -> None:
        for name, lo in (("decode_batches", 1), ("contexts", 0), ("mixed_tokens", 2)):
            v = tuple(getattr(self, name))
            if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < lo for x in v):
                raise ConfigError("<api>", f"grid.{name}", f"expected integers >= {lo}, got {list(v)}")
            if list(v) != sorted(set(v)):
                raise ConfigError("<api>", f"grid.{name}", f"expected strictly increasing values, got {list(v)}")
            object.__setattr__(self, name, tuple(int(x) for x in v))
        if len(self.decode_batches) < 2 or len(self.contexts) < 2:
            raise ConfigError("<api>", "grid", "decode_batches and contexts need at least 2 points each")
        if self.mixed_tokens and len(self.mixed_tokens) < 2:
            raise ConfigError("<api>", "grid.mixed_tokens", "expected no points or at least 2")
        for name in ("work_per_octave", "ffn_tokens_exact", "ffn_per_octave"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError("<api>", f"grid.{name}", f"expected an integer >= 1, got {v!r}")

    @property
    def simulations(self) -> int:
        return len(self.decode_batches) * len(self.contexts) + len(self.mixed_tokens)

    # The fine kernel-work axes: they contain the simulated axes, so grid points are exact.
    def work_batches(self) -> tuple[int, ...]:
        return tuple(sorted(set(ladder(1, self.decode_batches[-1], self.work_per_octave)) | set(self.decode_batches)
                            | {1}))

    def work_contexts(self) -> tuple[int, ...]:
        hi = self.contexts[-1]
        fine = ladder(1, hi, max(1, self.work_per_octave // 2)) if hi >= 1 else ()
        return _with_zero(set(fine) | set(self.contexts))

    def work_chunk_tokens(self) -> tuple[int, ...]:
        hi = max(self.mixed_tokens[-1] - 1, 2) if self.mixed_tokens else 2
        return tuple(sorted(set(ladder(1, hi, self.work_per_octave)) | {n - 1 for n in self.mixed_tokens}))

    def work_tokens(self, hi: int) -> tuple[int, ...]:
        """Token axis of the per-token compute table: every integer up to 1024 (kernel tables
        step at GEMM tile boundaries such as m = 64 / 65), then 32 points per octave."""
        hi = max(hi, 2)
        return tuple(sorted(set(range(1, min(hi, 1024) + 1)) | (set(ladder(1024, hi, 32)) if hi > 1024 else set())))

    def work_ffn_tokens(self, hi: int) -> tuple[int, ...]:
        """Token axis of the AFD FFN-side table: every integer up to ``ffn_tokens_exact``, then
        ``ffn_per_octave`` points per octave up to ``hi``."""
        hi = max(hi, 2)
        lo = min(hi, self.ffn_tokens_exact)
        return tuple(sorted(set(range(1, lo + 1)) | (set(ladder(lo, hi, self.ffn_per_octave)) if hi > lo else set())))

    def work_requests(self) -> tuple[int, ...]:
        hi = max(self.decode_batches[-1], self.mixed_tokens[-1] if self.mixed_tokens else 1, 2)
        return tuple(sorted(set(ladder(1, hi, self.work_per_octave)) | {2}))


@dataclass(frozen=True, slots=True)
class StepTime:
    """One answer of a :class:`StepTimeModel`: the step time and whether it is a simulated grid
    point or interpolated."""

    seconds: float
    source: Source


@dataclass(frozen=True)
class StepTimes:
    """Answers of a batch query: ``seconds[i]`` and ``simulated[i]`` (True: a grid point)."""

    seconds: np.ndarray
    simulated: np.ndarray

    @property
    def sources(self) -> list[Source]:
        return ["simulated" if s else "interpolated" for s in self.simulated]


# ---------------------------------------------------------------------------------------------
# Fingerprint


def _canon(x):
    """A JSON-able, process-independent form of ``x`` (dataclasses by field, sets sorted)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"__type__": type(x).__name__, **{f.name: _canon(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, enum.Enum):
        return _canon(x.value)
    if isinstance(x, dict) or hasattr(x, "items") and callable(x.items):
        return {str(k): _canon(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (set, frozenset)):
        return sorted((_canon(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(x, (list, tuple)):
        return [_canon(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    if isinstance(x, (float, np.floating)):
        return repr(float(x))
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(_canon(obj), sort_keys=True).encode()).hexdigest()[:16]


def _kernels_identity(kernels) -> dict:
    """What makes two kernel-table objects give the same durations."""
    keys = ("framework", "version", "prefer_wide_ep", "moe_ep_split", "user_dir")
    out = {k: _canon(getattr(kernels, k, None)) for k in keys}
    out["type"] = type(kernels).__name__
    for k in ("system", "data_system"):
        s = getattr(kernels, k, None)
        out[k] = _canon(s) if s is not None else None
    if hasattr(kernels, "describe"):
        out["describe"] = kernels.describe()
    return out


def query_neutral_spec(spec: StepSpec) -> StepSpec:
    """``spec`` with the fields a query replaces (batch, context, chunks) set to fixed values:
    what identifies the deployment."""
    return dataclasses.replace(spec, batch_per_rank=1, prefix_tokens=0, prefill_chunks=())


def topology_digest(topology: Topology) -> str:
    """Digest of what a topology *is* (nodes, links, routing, transport, GPU system), not of where
    it was read from: ``source`` is a label (a generated topology carries the design point that
    asked for it), so two equal topologies share their step models."""
    return _TOPOLOGY_DIGESTS.get(topology, lambda: _digest(dataclasses.replace(topology, source="")))


_TOPOLOGY_DIGESTS = IdentityCache(16)  # a digest costs ~15 ms on a 128-GPU cluster; asked at every point


def fingerprint(spec: StepSpec, kernels, topology: Topology, backend: str, overheads: CommOverheads,
                grid: StepGrid) -> dict[str, str]:
    """Digest of every input a :class:`StepTimeModel` depends on, per part. The GPUs enter by
    their path profile (:func:`cosim.topology.placement.placement_signature`), not by number:
    a model built on one HGX node serves every other node of the cluster."""
    return {
        "deployment": _digest(dataclasses.replace(query_neutral_spec(spec), gpus=None)),
        "placement": placement_signature(topology, spec.gpu_ranks),
        "kernels": _digest(_kernels_identity(kernels)),
        "topology": topology_digest(topology),
        "backend": backend,
        "overheads": _digest(overheads),
        "grid": _digest(grid),
    }


# ---------------------------------------------------------------------------------------------
# Per-request work from the kernel tables (the same ops the builder emits)


class _Work:
    """Per-request attention work, LM head work of a deployment, from its kernel tables.

    Uses the builder's own op lists (:func:`layer_op_lists`, :func:`head_ops`) and its set of
    ops costed per request class, so it is what the trace contains. Layers with the same
    attention shape (window kind and size, DSA indexer) are costed once and multiplied.
    """

    def __init__(self, spec: StepSpec, kernels, memo: _Values | None = None):
        self.spec = spec
        self.kernels = kernels
        self.memo = memo if memo is not None else _Values()
        self._dur: dict = {}
        model, par = spec.model, spec.parallel
        groups: dict[tuple, list[int]] = {}
        for layers in par.stage_layers(model):
            for layer in layers:
                ls = model.layer(layer)
                groups.setdefault((ls.ffn, ls.window_kind, ls.window_tokens, ls.indexer), []).append(layer)
        self._layers = [(members[0], len(members)) for members in groups.values()]

    def value(self, method: str, *args) -> float:
        """``getattr(self, method)(*args)``, looked up first in (and kept in) the memo."""
        key = f"{method}|{'|'.join(map(str, args))}"
        v = self.memo.get(key)
        if v is None:
            v = float(getattr(self, method)(*args))
            self.memo.put(key, v)
        return v

    def save(self) -> None:
        self.memo.save()

    def _seconds(self, ops, per_request: bool = True) -> float:
        total = 0.0
        for op in ops:
            if (op.name in PER_REQUEST_OPS) == per_request:
                d = self._dur.get(op)
                if d is None:
                    d = self._dur[op] = float(self.kernels.duration(op).seconds)
                total += d
        return total

    def tokens(self, tokens: int) -> float:
        """Per-token compute in series on the compute stream, for ``tokens`` tokens through
        every layer: the attention block's ops not costed per request (norms, projections) and
        the FFN of dense layers (MoE layers' router, experts and shared expert overlap the
        dispatch/combine: they stay in the simulated residual)."""
        spec = dataclasses.replace(self.spec, batch_per_rank=tokens, prefix_tokens=0, prefill_chunks=(),
                                   mtp_tokens=0)
        par, model = spec.parallel, spec.model
        total = 0.0
        for layer, count in self._layers:
            attn, ffn, _ = layer_op_lists(spec, layer, par, tokens, 1)
            w = self._seconds(attn, per_request=False)
            if model.layer(layer).ffn != "moe":
                w += self._seconds(ffn, per_request=False)
            total += count * w
        return total

    def _layers_work(self, spec: StepSpec, batch: int) -> float:
        par = spec.parallel
        return sum(count * self._seconds(layer_op_lists(spec, layer, par, batch, spec.new_tokens)[0])
                   for layer, count in self._layers)

    def decode(self, batch: int, context: int) -> float:
        """Per-request work of ``batch`` decode requests at ``context`` (verify pass and MTP
        drafts)."""
        spec = dataclasses.replace(self.spec, batch_per_rank=batch, prefix_tokens=context, prefill_chunks=())
        w = self._layers_work(spec, decode_batch(spec))
        if spec.mtp_tokens:
            draft = dataclasses.replace(spec, mtp_tokens=0, overlap="none")
            layer = mtp_layer_index(spec.model)
            w += spec.mtp_tokens * self._seconds(layer_op_lists(draft, layer, spec.parallel, batch, 1)[0])
        return w

    def chunk(self, new_tokens: int, prefix_tokens: int) -> float:
        """Per-request work of one prefill chunk in a mixed step."""
        spec = dataclasses.replace(self.spec, batch_per_rank=0, prefix_tokens=0, mtp_tokens=0,
                                   prefill_chunks=(PrefillChunk(prefix_tokens, new_tokens),))
        return self._layers_work(spec, 0)

    def head(self, requests: int) -> float:
        """Final norm and LM head over ``requests`` requests (one token each)."""
        spec = dataclasses.replace(self.spec, batch_per_rank=requests, prefix_tokens=0, prefill_chunks=(),
                                   mtp_tokens=0)
        heads, _ = head_ops(spec, spec.parallel, requests, 1)
        return sum(float(self.kernels.duration(op).seconds) for op in heads.post_layers)

    def afd_micro_batch(self, batch: int, context: int, per_request: bool) -> float:
        """AFD: the attention group's compute for one micro-batch of ``batch`` requests at
        ``context`` through every layer, as :func:`cosim.trace.afd.build_afd_trace` puts it on an
        attention rank's compute stream: the attention block (heads split ``attention_tp``
        ways), the router (routed A2F), the shared expert and dense FFN where placed on the
        attention side, embedding and LM head. ``per_request``: only the ops costed per request
        class (:data:`PER_REQUEST_OPS`, context-dependent), else only the others (per token)."""
        spec = dataclasses.replace(self.spec, batch_per_rank=batch, prefix_tokens=context, prefill_chunks=())
        apar = attention_parallel(spec)
        total = 0.0
        for layer, count in self._layers:
            total += count * self._seconds(list(attention_side_ops(spec, layer, batch).ops), per_request)
        if not per_request:
            heads, _ = head_ops(spec, apar, batch, 1)
            total += self._seconds([*heads.pre_layers, *heads.post_layers], per_request=False)
        return total

    def afd_chunk(self, new_tokens: int, prefix_tokens: int) -> float:
        """AFD mixed step: the per-request attention-side work of one prefill chunk."""
        spec = dataclasses.replace(self.spec, batch_per_rank=0, prefix_tokens=0,
                                   prefill_chunks=(PrefillChunk(prefix_tokens, new_tokens),))
        return sum(count * self._seconds(list(attention_side_ops(spec, layer, 0).ops), per_request=True)
                   for layer, count in self._layers)

    def afd_body(self, tokens: int) -> float:
        """AFD mixed step: the attention side's per-token work of a micro-batch of ``tokens``
        tokens (every layer and the embedding; not the LM head, which runs per request)."""
        spec = dataclasses.replace(self.spec, batch_per_rank=tokens, prefix_tokens=0, prefill_chunks=())
        heads, _ = head_ops(spec, attention_parallel(spec), tokens, 1)
        return (sum(count * self._seconds(list(attention_side_ops(spec, layer, tokens).ops), per_request=False)
                    for layer, count in self._layers) + self._seconds(heads.pre_layers, per_request=False))

    def afd_head(self, requests: int) -> float:
        """AFD: final norm and LM head over ``requests`` requests on an attention rank."""
        spec = dataclasses.replace(self.spec, batch_per_rank=requests, prefix_tokens=0, prefill_chunks=())
        heads, _ = head_ops(spec, attention_parallel(spec), requests, 1)
        return self._seconds(heads.post_layers, per_request=False)

    def afd_ffn(self, tokens: int) -> float:
        """AFD: the slowest FFN rank's compute for one micro-batch of ``tokens`` tokens per
        instance through every layer (its expert load from the routing sample, as in the trace)."""
        mb = MicroBatch(tokens)
        return sum(count * ffn_rank_seconds(self.spec, layer, mb, self.kernels) for layer, count in self._layers)


# ---------------------------------------------------------------------------------------------
# Sharing simulated steps and kernel work between models (and processes)


class _Values:
    """A string-keyed table of floats, optionally backed by a JSON file (merged on save, renamed
    into place: processes sharing it never read a torn file and lose no value of their own)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._values: dict[str, float] = {}
        self._new: dict[str, float] = {}
        self.reload()

    def reload(self) -> None:
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            self._values.update({k: float(v) for k, v in data.get("values", {}).items()})

    def get(self, key: str) -> float | None:
        return self._values.get(key)

    def put(self, key: str, value: float) -> None:
        self._values[key] = value
        self._new[key] = value

    def save(self) -> None:
        if self.path is None or not self._new:
            return
        import os

        self.reload()  # another process may have added values since
        self._values.update(self._new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": "cosim.step_cache", "version": FORMAT_VERSION,
                                   "values": self._values}))
        os.replace(tmp, self.path)
        self._new.clear()


def _step_key(spec: StepSpec) -> str:
    """The query fields of a step (what distinguishes steps of one deployment)."""
    chunks = ";".join(f"{c.prefix_tokens},{c.new_tokens}" for c in spec.prefill_chunks)
    return f"{spec.batch_per_rank}|{spec.prefix_tokens}|{chunks}"


class _Steps:
    """Step times of one deployment on one simulator: from the cache's table, else simulated
    (and kept). ``claimed()``: while held, no other process simulates this deployment's steps
    through the same cache folder (they wait, then find the steps simulated)."""

    def __init__(self, simulator: StepSimulator, values: _Values | None = None, lock: Path | None = None):
        self.simulator = simulator
        self.values = values if values is not None else _Values()
        self.lock = lock

    def step_time_s(self, spec: StepSpec) -> float:
        key = _step_key(spec)
        t = self.values.get(key)
        if t is None:
            t = float(self.simulator.simulate(spec).step_time_s)
            self.values.put(key, t)
        return t

    @contextlib.contextmanager
    def claimed(self) -> Iterator[None]:
        if self.lock is None:
            yield
            return
        _acquire(self.lock)
        try:
            self.values.reload()
            yield
            self.values.save()
        finally:
            self.lock.unlink(missing_ok=True)


#: A lock older than this is taken for one left by a process that died (seconds).
LOCK_STALE_S = 3600.0


def _acquire(lock: Path, poll_s: float = 0.2) -> None:
    """Create ``lock`` exclusively (holding ``host pid``), waiting while another live process
    holds it; a lock of a dead process on this host, or older than :data:`LOCK_STALE_S`, is
    removed. A wrongly broken lock only costs duplicate work: the values are the same."""
    import os
    import socket

    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
                age = time.time() - lock.stat().st_mtime
            except (OSError, ValueError):
                time.sleep(poll_s)  # being written, or just removed
                continue
            dead = False
            if host == socket.gethostname():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    dead = True
                except (PermissionError, ValueError):
                    pass
            if dead or age > LOCK_STALE_S:
                lock.unlink(missing_ok=True)
            else:
                time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return


@dataclass
class StepCache:
    """Simulated step times and kernel-work values shared by every :class:`StepTimeModel` built
    with it, in memory and (with ``directory``) on disk for other processes and later runs.

    Models of one deployment whose grids differ (the contexts of another workload, a pool with
    or without mixed steps) simulate many of the same steps: a step is identified by the
    deployment's fingerprint without the grid (:func:`fingerprint`, plus the simulator's
    congestion iterations) and its query fields (batch, context, chunks), so a hit is the same
    simulation and returns the same float. Kernel-work values (tables read from the kernel
    tables) depend on the deployment and kernels only, so models on other placements and
    topologies share them too. Files: ``steps-<digest>.json`` and ``work-<digest>.json``.
    """

    directory: Path | None = None

    def __post_init__(self) -> None:
        self._steps: dict[str, _Values] = {}
        self._work: dict[str, _Values] = {}
        self.built = FillStats()  # the fills of every model built with this cache, summed

    def record(self, fill: FillStats) -> None:
        for f in dataclasses.fields(FillStats):
            setattr(self.built, f.name, getattr(self.built, f.name) + getattr(fill, f.name))

    def _table(self, tables: dict, kind: str, ident: str) -> _Values:
        t = tables.get(ident)
        if t is None:
            path = self.directory / f"{kind}-{ident}.json" if self.directory is not None else None
            t = tables[ident] = _Values(path)
        return t

    def steps_for(self, base: StepSpec, simulator: StepSimulator) -> _Steps:
        fp = fingerprint(base, simulator.kernels, simulator.topology, simulator.backend, simulator.overheads,
                         StepGrid())
        fp.pop("grid")
        fp["congestion_iterations"] = str(simulator.max_congestion_iterations)
        ident = _digest(fp)
        lock = self.directory / f"steps-{ident}.lock" if self.directory is not None else None
        return _Steps(simulator, self._table(self._steps, "steps", ident), lock)

    def work_for(self, base: StepSpec, kernels) -> _Values:
        ident = _digest({"deployment": dataclasses.replace(query_neutral_spec(base), gpus=None),
                         "kernels": _kernels_identity(kernels)})
        return self._table(self._work, "work", ident)


_SHARED: dict[str, StepCache] = {}


def shared_step_cache(directory: str | Path) -> StepCache:
    """This process's :class:`StepCache` of ``directory`` (one per folder, so what one design
    point simulated is in memory for the next)."""
    key = str(Path(directory).resolve())
    if key not in _SHARED:
        _SHARED[key] = StepCache(Path(key))
    return _SHARED[key]


# ---------------------------------------------------------------------------------------------
# Interpolation helpers (pure Python for single queries, numpy for batches)


def _cell(xs: list[float], x: float) -> tuple[int, float]:
    """Index i and weight t of ``x`` in ``[xs[i], xs[i+1]]`` (``x`` inside the axis)."""
    i = bisect_right(xs, x) - 1
    if i >= len(xs) - 1:
        i = len(xs) - 2
    x0 = xs[i]
    return i, (x - x0) / (xs[i + 1] - x0)


def _lin(xs: list[float], ys: list[float], x: float) -> float:
    i, t = _cell(xs, x)
    return ys[i] + t * (ys[i + 1] - ys[i])


def _bilin(xs: list[float], ys: list[float], table: list[list[float]], x: float, y: float) -> float:
    i, t = _cell(xs, x)
    j, u = _cell(ys, y)
    r0, r1 = table[i], table[i + 1]
    a = r0[j] + u * (r0[j + 1] - r0[j])
    b = r1[j] + u * (r1[j + 1] - r1[j])
    return a + t * (b - a)


def _cells_np(xs: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i = np.minimum(np.maximum(np.searchsorted(xs, x, side="right") - 1, 0), len(xs) - 2)  # np.clip, without its overhead
    return i, (x - xs[i]) / (xs[i + 1] - xs[i])


def _lin_np(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    i, t = _cells_np(xs, x)
    return ys[i] + t * (ys[i + 1] - ys[i])


def _bilin_np(xs: np.ndarray, ys: np.ndarray, table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    i, t = _cells_np(xs, x)
    j, u = _cells_np(ys, y)
    a = table[i, j] + u * (table[i, j + 1] - table[i, j])
    b = table[i + 1, j] + u * (table[i + 1, j + 1] - table[i + 1, j])
    return a + t * (b - a)


# ---------------------------------------------------------------------------------------------


@dataclass
class FillStats:
    """Cost of filling a model's grid: steps simulated, network simulations, wall times, grid
    steps answered by the :class:`StepCache` (simulated earlier for another model)."""

    steps: int = 0
    network_simulations: int = 0
    simulate_wall_s: float = 0.0
    work_wall_s: float = 0.0
    cached_steps: int = 0


class StepTimeModel:
    """Step times of one deployment from a simulated, interpolated grid (module docstring).

    Build with :meth:`build` (simulates the grid) or :meth:`load` (a saved one); query with
    :meth:`step_time` (one query, a :class:`StepTime`) or :meth:`step_times` (arrays).
    """

    def __init__(self, base: StepSpec, grid: StepGrid, fingerprint: dict[str, str], tables: dict,
                 fill: FillStats | None = None):
        self.base = base
        self.grid = grid
        self.fingerprint = dict(fingerprint)
        self.fill = fill or FillStats()
        self._tables = tables
        self._setup()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def supports_mixed(spec: StepSpec) -> bool:
        """Mixed queries need the colocated layout without two-batch overlap and MTP, or the AFD
        layout (the decompositions of the module docstring)."""
        return spec.layout == "afd" or (spec.layout == "colocated" and spec.overlap == "none"
                                        and spec.mtp_tokens == 0)

    @classmethod
    def build(cls, base: StepSpec, simulator: StepSimulator, grid: StepGrid | None = None,
              progress=None, cache: StepCache | None = None) -> StepTimeModel:
        """Simulate ``grid`` (default :class:`StepGrid`) for the deployment ``base`` with
        ``simulator`` (its kernels, topology, backend and overheads; its network memo is shared
        by every grid point). ``progress``: optional ``callable(done, total)``. ``cache``: where
        simulated steps and kernel-work values are looked up first and kept (default: none): a
        step another model of the same deployment already simulated is not simulated again,
        with the same answer."""
        grid = grid or StepGrid()
        if base.phase != "generation":
            raise ConfigError("<api>", "phase", "a StepTimeModel answers decode and mixed (chunked-prefill) steps: "
                                                "the base spec must have phase 'generation'")
        lo = cls._min_batch(base)
        if base.layout == "afd" and grid.mixed_tokens:  # an anchor needs a token per micro-batch
            kept = tuple(n for n in grid.mixed_tokens if n >= lo)
            grid = dataclasses.replace(grid, mixed_tokens=kept if len(kept) >= 2 else ())
        mixed = cls.supports_mixed(base) and bool(grid.mixed_tokens)
        if grid.mixed_tokens and not cls.supports_mixed(base):
            grid = dataclasses.replace(grid, mixed_tokens=())
        if grid.decode_batches[0] < lo:  # AFD: every micro-batch needs a request
            grid = dataclasses.replace(grid, decode_batches=tuple(sorted({lo, *(b for b in grid.decode_batches
                                                                                if b >= lo)})))
        fill = FillStats()
        steps = cache.steps_for(base, simulator) if cache is not None else _Steps(simulator)
        stats0 = simulator.stats
        t0 = time.perf_counter()
        total = grid.simulations
        done = 0
        decode = np.zeros((len(grid.decode_batches), len(grid.contexts)))
        anchors = np.zeros(len(grid.mixed_tokens))
        with steps.claimed():  # one process at a time simulates this deployment's steps
            for i, b in enumerate(grid.decode_batches):
                for j, c in enumerate(grid.contexts):
                    spec = dataclasses.replace(base, batch_per_rank=b, prefix_tokens=c, prefill_chunks=())
                    decode[i, j] = steps.step_time_s(spec)
                    done += 1
                    if progress:
                        progress(done, total)
            for k, n in enumerate(grid.mixed_tokens):
                anchors[k] = steps.step_time_s(cls._anchor_spec(base, n))
                done += 1
                if progress:
                    progress(done, total)
        fill.simulate_wall_s = time.perf_counter() - t0
        stats = simulator.stats
        fill.steps = stats.steps - stats0.steps
        fill.network_simulations = stats.network_simulations - stats0.network_simulations
        fill.cached_steps = total - fill.steps

        t1 = time.perf_counter()
        decomposed = base.layout == "colocated" and base.overlap == "none"
        afd = base.layout == "afd"
        memo = cache.work_for(base, simulator.kernels) if cache is not None else None
        if memo is not None:
            memo.reload()  # what another process computed since
        work = _Work(base, simulator.kernels, memo)
        w = work.value
        wb, wc = grid.work_batches(), grid.work_contexts()
        wt = grid.work_tokens(cls._token_hi(base, grid))
        if afd:  # per micro-batch, attention side (module docstring)
            w_dec = np.array([[w("afd_micro_batch", b, c, True) for c in wc] for b in wb])
            w_tok = [w("afd_micro_batch", n, 0, False) for n in wt]
        else:
            w_dec = np.array([[w("decode", b, c) if decomposed else 0.0 for c in wc] for b in wb])
            w_tok = [w("tokens", n) if decomposed else 0.0 for n in wt]
        tables = {"decode": decode.tolist(), "anchors": anchors.tolist(), "w_decode": w_dec.tolist(),
                  "w_tokens": w_tok, "decomposed": decomposed, "mixed": mixed}
        if afd:
            tables["afd_micro_batches"] = base.afd.micro_batches
        if mixed and afd:
            wn, wp, wr = grid.work_chunk_tokens(), grid.work_contexts(), grid.work_requests()
            tables["w_chunk"] = [[w("afd_chunk", n, p) for p in wp] for n in wn]
            tables["w_head"] = [w("afd_head", r) for r in wr]
            tables["w_body"] = [w("afd_body", n) for n in wt]
            tables["w_ffn"] = [w("afd_ffn", n) for n in grid.work_ffn_tokens(cls._token_hi(base, grid))]
        elif mixed:
            wn, wp, wr = grid.work_chunk_tokens(), grid.work_contexts(), grid.work_requests()
            tables["w_chunk"] = [[w("chunk", n, p) for p in wp] for n in wn]
            tables["w_head"] = [w("head", r) for r in wr]
        work.save()
        fill.work_wall_s = time.perf_counter() - t1
        if cache is not None:
            cache.record(fill)
        fp = fingerprint(base, simulator.kernels, simulator.topology, simulator.backend, simulator.overheads, grid)
        return cls(query_neutral_spec(base), grid, fp, tables, fill)

    @staticmethod
    def _min_batch(base: StepSpec) -> int:
        """Smallest decode batch the layout simulates (AFD: one request per micro-batch)."""
        return base.afd.micro_batches if base.layout == "afd" else 1

    @staticmethod
    def _token_hi(base: StepSpec, grid: StepGrid) -> int:
        return max(grid.decode_batches[-1] * (1 + base.mtp_tokens), grid.mixed_tokens[-1] if grid.mixed_tokens else 1)

    @staticmethod
    def _anchor_decode(base: StepSpec) -> int:
        """Decode requests of an anchor mixed step: 1 (colocated); AFD: one per micro-batch but
        the chunk's (``m - 1``), so the chunk's micro-batch carries nothing else."""
        return base.afd.micro_batches - 1 if base.layout == "afd" else 1

    @classmethod
    def _anchor_spec(cls, base: StepSpec, total_tokens: int) -> StepSpec:
        """The simulated anchor mixed step of ``total_tokens``: :meth:`_anchor_decode` decode
        requests at context 0 and one chunk of the other tokens, without prefix."""
        d = cls._anchor_decode(base)
        return dataclasses.replace(base, batch_per_rank=d, prefix_tokens=0,
                                   prefill_chunks=(PrefillChunk(0, total_tokens - d),))

    def _setup(self) -> None:
        g, t = self.grid, self._tables
        self._mixed = bool(t.get("mixed"))
        self._xb = [float(b) for b in g.decode_batches]
        self._xc = [float(c) for c in g.contexts]
        self._wb = [float(b) for b in g.work_batches()]
        self._wc = [float(c) for c in g.work_contexts()]
        self._w_dec = [list(map(float, row)) for row in t["w_decode"]]
        decode = [list(map(float, row)) for row in t["decode"]]
        self._decode_exact = {(b, c): decode[i][j] for i, b in enumerate(g.decode_batches)
                              for j, c in enumerate(g.contexts)}
        wd_index_b = {int(b): i for i, b in enumerate(self._wb)}
        wd_index_c = {int(c): j for j, c in enumerate(self._wc)}
        self._tok_mult = 1 + self.base.mtp_tokens
        self._wt = [float(n) for n in g.work_tokens(self._token_hi(self.base, g))]
        self._w_tok = [float(x) for x in t["w_tokens"]]
        wt_index = {int(n): i for i, n in enumerate(self._wt)}
        self._afd_m = int(t.get("afd_micro_batches", 0))
        if self._afd_m:
            # Q(B): the round trip of one micro-batch through every layer (A2F, FFN, F2A; context-
            # independent), from the contexts where one micro-batch's path bounds the step
            work = [[self._afd_work(b, c) for c in g.contexts] for b in g.decode_batches]
            self._afd_q = [min(decode[i][j] - w[1] for j, w in enumerate(row)) for i, row in enumerate(work)]
            self._residual = [[decode[i][j] - max(w[0], w[1] + self._afd_q[i]) for j, w in enumerate(row)]
                              for i, row in enumerate(work)]
        else:
            self._residual = [[decode[i][j] - self._w_dec[wd_index_b[b]][wd_index_c[c]]
                               - self._w_tok[wt_index[b * self._tok_mult]]
                               for j, c in enumerate(g.contexts)] for i, b in enumerate(g.decode_batches)]
        self.max_batch = g.decode_batches[-1]
        self.min_batch = g.decode_batches[0]
        self.method = "afd" if self._afd_m else "decomposed" if t.get("decomposed") else "opaque"
        self.max_context = g.contexts[-1]
        self.min_context = g.contexts[0]
        self._anchor_d = self._anchor_decode(self.base)
        if self._mixed:
            self._xn = [float(n) for n in g.mixed_tokens]
            self._wn = [float(n) for n in g.work_chunk_tokens()]
            self._wr = [float(r) for r in g.work_requests()]
            self._w_chunk = [list(map(float, row)) for row in t["w_chunk"]]
            self._w_head = [float(x) for x in t["w_head"]]
            anchors = [float(x) for x in t["anchors"]]
            self._anchor_exact = {n: a for n, a in zip(g.mixed_tokens, anchors)}
            self.max_mixed_tokens = g.mixed_tokens[-1]
            self.min_mixed_tokens = g.mixed_tokens[0]
        if self._mixed and self._afd_m:
            # x(t): what the chunk micro-batch's path through every layer takes beyond its own
            # attention-side and FFN-side compute (A2F, F2A, waits), from the anchors
            self._w_body = [float(x) for x in t["w_body"]]
            self._w_ffn = [float(x) for x in t["w_ffn"]]
            self._wf = [float(n) for n in g.work_ffn_tokens(self._token_hi(self.base, g))]
            d = self._anchor_d
            self._xt = [float(n - d) for n in g.mixed_tokens]
            self._afd_x = []
            for n, a in zip(g.mixed_tokens, anchors):
                work, ffn = self._afd_mb_work(MicroBatch(0, (PrefillChunk(0, n - d),)), 0.0)
                self._afd_x.append(a - work - ffn)
        elif self._mixed:
            # base(N) = T_anchor(N) - H(2) - W_dec(1, 0) - W_pre(N - 1, 0), exact at the anchors
            h2 = _lin(self._wr, self._w_head, 2.0)
            wd10 = _bilin(self._wb, self._wc, self._w_dec, 1.0, 0.0)
            self._base = [a - h2 - wd10 - _bilin(self._wn, self._wc, self._w_chunk, n - 1.0, 0.0)
                          - self._w_tok[wt_index[int(n)]] for n, a in zip(self._xn, anchors)]
        # numpy copies for batch queries
        self._np = {k: np.asarray(getattr(self, k), dtype=float) for k in
                    ("_xb", "_xc", "_wb", "_wc", "_w_dec", "_residual", "_wt", "_w_tok")}
        if self._afd_m:
            self._np["_afd_q"] = np.asarray(self._afd_q, dtype=float)
        if self._mixed and not self._afd_m:
            self._np.update({k: np.asarray(getattr(self, k), dtype=float) for k in
                             ("_xn", "_wn", "_wr", "_w_chunk", "_w_head", "_base")})

    def _afd_work(self, batch: int, context: float) -> tuple[float, float]:
        """AFD: the attention group's compute of a step (summed over its micro-batches of
        ``ceil`` and ``floor(batch / m)`` requests) and of its largest micro-batch, from the
        per-micro-batch tables."""
        m = self._afd_m
        lo = batch // m
        n_hi = batch - lo * m
        w_lo = _bilin(self._wb, self._wc, self._w_dec, lo, context) + _lin(self._wt, self._w_tok, lo)
        if not n_hi:
            return m * w_lo, w_lo
        w_hi = _bilin(self._wb, self._wc, self._w_dec, lo + 1, context) + _lin(self._wt, self._w_tok, lo + 1)
        return (m - n_hi) * w_lo + n_hi * w_hi, w_hi

    def _afd_mb_work(self, mb: MicroBatch, context: float) -> tuple[float, float]:
        """AFD mixed step: a micro-batch's attention-side compute (per-token work, LM head per
        request, decode attention at ``context``, each chunk's attention) and FFN-side compute."""
        t = float(mb.tokens)
        work = _lin(self._wt, self._w_body, t) + _lin(self._wr, self._w_head, float(mb.requests))
        if mb.decode:
            work += _bilin(self._wb, self._wc, self._w_dec, float(mb.decode), context)
        for c in mb.chunks:
            work += _bilin(self._wn, self._wc, self._w_chunk, float(c.new_tokens), float(c.prefix_tokens))
        return work, _lin(self._wf, self._w_ffn, t)

    def _afd_mixed_time(self, batch: int, context: float, chunks: Sequence[PrefillChunk]) -> float:
        """AFD mixed step: the largest of the attention group's busy time, the FFN group's and
        the slowest micro-batch's path (its compute on both sides plus ``x`` of its tokens,
        linear between the anchors and held at the end anchors outside them)."""
        busy_a = busy_f = path = 0.0
        lo, hi = self._xt[0], self._xt[-1]
        for mb in partition(batch, chunks, self._afd_m):
            if not mb.tokens:
                continue
            work, ffn = self._afd_mb_work(mb, context)
            busy_a += work
            busy_f += ffn
            path = max(path, work + ffn + _lin(self._xt, self._afd_x, min(max(float(mb.tokens), lo), hi)))
        return max(busy_a, busy_f, path)

    def _afd_time(self, batch: int, context: float) -> float:
        """AFD step time: the pipeline bound (module docstring) plus the interpolated residual."""
        total, largest = self._afd_work(batch, context)
        bound = max(total, largest + _lin(self._xb, self._afd_q, batch))
        return bound + _bilin(self._xb, self._xc, self._residual, batch, context)

    def _afd_time_np(self, batch: np.ndarray, context: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`_afd_time`."""
        a, m = self._np, self._afd_m
        lo = np.floor(batch / m)
        n_hi = batch - lo * m
        hi = np.minimum(lo + 1, self.max_batch)

        def per_micro_batch(x):
            return _bilin_np(a["_wb"], a["_wc"], a["_w_dec"], x, context) + _lin_np(a["_wt"], a["_w_tok"], x)

        w_lo, w_hi = per_micro_batch(lo), per_micro_batch(hi)
        total = (m - n_hi) * w_lo + n_hi * w_hi
        largest = np.where(n_hi > 0, w_hi, w_lo)
        bound = np.maximum(total, largest + _lin_np(a["_xb"], a["_afd_q"], batch))
        return bound + _bilin_np(a["_xb"], a["_xc"], a["_residual"], batch, context)

    # ------------------------------------------------------------------ queries

    def spec_for(self, batch: int, context: int = 0, chunks: Sequence = ()) -> StepSpec:
        """The step a query stands for (``dataclasses.replace`` of the base spec)."""
        return dataclasses.replace(self.base, batch_per_rank=int(batch), prefix_tokens=int(context),
                                   prefill_chunks=tuple(_chunk(c) for c in chunks))

    def _refuse(self, field_name: str, message: str):
        raise ConfigError("<step-model>", field_name, message + " (build the StepTimeModel with a wider StepGrid)")

    def step_time(self, batch: int, context: int = 0, chunks: Sequence = ()) -> StepTime:
        """Step time of ``batch`` decode requests per attention rank at ``context`` tokens,
        plus prefill ``chunks`` (:class:`PrefillChunk` or ``(prefix_tokens, new_tokens)``)."""
        if not chunks:
            if not self.min_batch <= batch <= self.max_batch:
                self._refuse("batch", f"decode batch {batch} outside the grid {self.min_batch}..{self.max_batch}")
            if not self.min_context <= context <= self.max_context:
                self._refuse("context", f"context {context} outside the grid {self.min_context}..{self.max_context}")
            hit = self._decode_exact.get((batch, context))
            if hit is not None:
                return StepTime(hit, "simulated")
            if self._afd_m:
                return StepTime(self._afd_time(batch, context), "interpolated")
            return StepTime(_bilin(self._xb, self._xc, self._residual, batch, context)
                            + _bilin(self._wb, self._wc, self._w_dec, batch, context)
                            + _lin(self._wt, self._w_tok, batch * self._tok_mult), "interpolated")
        if not self._mixed:
            self._refuse("chunks", "this model has no mixed-step grid (grid.mixed_tokens empty, or a layout "
                                   "with two-batch overlap, MTP or AFD)")
        total = batch
        work = 0.0
        wn, wc, wch = self._wn, self._wc, self._w_chunk
        for c in chunks:
            p, n = (c.prefix_tokens, c.new_tokens) if isinstance(c, PrefillChunk) else c
            if n < 1 or p < 0:
                self._refuse("chunks", f"a chunk needs new_tokens >= 1 and prefix_tokens >= 0, got {(p, n)}")
            if p > self.max_context:
                self._refuse("chunks.prefix_tokens", f"chunk prefix {p} above the grid's {self.max_context}")
            total += n
            work += _bilin(wn, wc, wch, n, p)
        if batch:
            if batch > self.max_batch or batch < 0:
                self._refuse("batch", f"decode batch {batch} outside the grid 0..{self.max_batch}")
            if not self.min_context <= context <= self.max_context:
                self._refuse("context", f"context {context} outside the grid {self.min_context}..{self.max_context}")
            work += _bilin(self._wb, self._wc, self._w_dec, batch, context)
        elif batch < 0:
            self._refuse("batch", f"expected >= 0, got {batch}")
        if not self.min_mixed_tokens <= total <= self.max_mixed_tokens:
            self._refuse("chunks", f"mixed step of {total} tokens outside the grid "
                                   f"{self.min_mixed_tokens}..{self.max_mixed_tokens}")
        if batch == self._anchor_d and context == 0 and len(chunks) == 1:
            c = chunks[0]
            p = c.prefix_tokens if isinstance(c, PrefillChunk) else c[0]
            hit = self._anchor_exact.get(total) if p == 0 else None
            if hit is not None:
                return StepTime(hit, "simulated")
        if self._afd_m:
            return StepTime(self._afd_mixed_time(batch, context, [_chunk(c) for c in chunks]), "interpolated")
        seconds = (_lin(self._xn, self._base, total) + _lin(self._wt, self._w_tok, total)
                   + _lin(self._wr, self._w_head, batch + len(chunks)) + work)
        return StepTime(seconds, "interpolated")

    def step_times(self, batch, context=0, chunk_prefix=None, chunk_new=None) -> StepTimes:
        """Vectorized :meth:`step_time`: ``batch`` and ``context`` arrays of Q queries (or
        scalars), chunks as ``(Q, K)`` arrays of prefixes and new tokens (``new = 0``: no
        chunk in that slot). Same answers as :meth:`step_time`, same range checks."""
        b = np.atleast_1d(np.asarray(batch, dtype=float))
        c = np.broadcast_to(np.asarray(context, dtype=float), b.shape).astype(float)
        q = len(b)
        if chunk_new is None:
            cn = np.zeros((q, 0))
            cp = np.zeros((q, 0))
        else:
            cn = np.asarray(chunk_new, dtype=float).reshape(q, -1)
            cp = np.zeros_like(cn) if chunk_prefix is None else np.asarray(chunk_prefix, dtype=float).reshape(q, -1)
        has = cn > 0
        k = has.sum(axis=1)
        mixed = k > 0
        a = self._np
        out = np.zeros(q)
        simulated = np.zeros(q, dtype=bool)
        dec = ~mixed
        if np.any(dec):
            bd, cd = b[dec], c[dec]
            if bd.min() < self.min_batch or bd.max() > self.max_batch:
                self._refuse("batch", f"decode batch outside the grid {self.min_batch}..{self.max_batch}")
            self._check_context(cd)
            if self._afd_m:
                out[dec] = self._afd_time_np(bd, cd)
            else:
                out[dec] = (_bilin_np(a["_xb"], a["_xc"], a["_residual"], bd, cd)
                            + _bilin_np(a["_wb"], a["_wc"], a["_w_dec"], bd, cd)
                            + _lin_np(a["_wt"], a["_w_tok"], bd * self._tok_mult))
            ib = np.searchsorted(a["_xb"], bd)
            jc = np.searchsorted(a["_xc"], cd)
            on = ((ib < len(a["_xb"])) & (a["_xb"][np.minimum(ib, len(a["_xb"]) - 1)] == bd)
                  & (jc < len(a["_xc"])) & (a["_xc"][np.minimum(jc, len(a["_xc"]) - 1)] == cd))
            if np.any(on):
                idx = np.flatnonzero(dec)[on]
                out[idx] = [self._decode_exact[(int(x), int(y))] for x, y in zip(bd[on], cd[on])]
                simulated[idx] = True
        if np.any(mixed) and self._afd_m:  # per query: the micro-batch partition differs
            for i in np.flatnonzero(mixed):
                st = self.step_time(int(b[i]), int(c[i]), [(int(p), int(n)) for p, n in zip(cp[i], cn[i]) if n > 0])
                out[i] = st.seconds
                simulated[i] = st.source == "simulated"
        elif np.any(mixed):
            if not self._mixed:
                self._refuse("chunks", "this model has no mixed-step grid")
            bm, cm, nm, pm, km = b[mixed], c[mixed], cn[mixed], cp[mixed], k[mixed]
            hm = nm > 0
            if bm.min() < 0 or bm.max() > self.max_batch:
                self._refuse("batch", f"decode batch outside the grid 0..{self.max_batch}")
            if np.any(hm & (pm > self.max_context)) or np.any(pm < 0):
                self._refuse("chunks.prefix_tokens", f"chunk prefix outside 0..{self.max_context}")
            total = bm + nm.sum(axis=1)
            if total.min() < self.min_mixed_tokens or total.max() > self.max_mixed_tokens:
                self._refuse("chunks", f"mixed step tokens outside the grid "
                                       f"{self.min_mixed_tokens}..{self.max_mixed_tokens}")
            withdec = bm > 0
            if np.any(withdec):
                self._check_context(cm[withdec])
            wpre = np.where(hm, _bilin_np(a["_wn"], a["_wc"], a["_w_chunk"], np.maximum(nm, 1.0), pm), 0.0).sum(axis=1)
            wdec = np.zeros_like(bm)
            if np.any(withdec):
                wdec[withdec] = _bilin_np(a["_wb"], a["_wc"], a["_w_dec"], bm[withdec], cm[withdec])
            vals = (_lin_np(a["_xn"], a["_base"], total) + _lin_np(a["_wt"], a["_w_tok"], total)
                    + _lin_np(a["_wr"], a["_w_head"], bm + km) + wpre + wdec)
            # anchors: 1 decode request at context 0 + one chunk without prefix
            first_p = np.where(hm, pm, np.inf).min(axis=1)
            anchor = (bm == 1) & (cm == 0) & (km == 1) & (first_p == 0)
            idx = np.flatnonzero(mixed)
            for i in np.flatnonzero(anchor):
                hit = self._anchor_exact.get(int(total[i]))
                if hit is not None:
                    vals[i] = hit
                    simulated[idx[i]] = True
            out[mixed] = vals
        return StepTimes(out, simulated)

    def _check_context(self, c: np.ndarray) -> None:
        if c.min() < self.min_context or c.max() > self.max_context:
            self._refuse("context", f"context outside the grid {self.min_context}..{self.max_context}")

    # ------------------------------------------------------------------ save / load

    def to_dict(self) -> dict:
        return {"format": "cosim.step_model", "version": FORMAT_VERSION, "fingerprint": self.fingerprint,
                "deployment": repr(self.base)[:2000],
                "grid": {f.name: getattr(self.grid, f.name) for f in dataclasses.fields(self.grid)},
                "tables": self._tables, "fill": dataclasses.asdict(self.fill)}

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (floats round-trip exactly), to a temporary name renamed into
        place: processes sharing a cache never read a torn file."""
        import os

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, base: StepSpec, kernels, topology: Topology, backend: str = "flow", *,
             overheads: CommOverheads = DEFAULT_OVERHEADS) -> StepTimeModel:
        """Read a model saved by :meth:`save`, after checking that it was made for this
        deployment (``base``, query fields ignored), kernel tables, topology, backend and
        overheads; otherwise a :class:`ConfigError` naming what differs."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(str(path), "", f"cannot read a saved step model: {e}") from None
        if data.get("format") != "cosim.step_model" or data.get("version") != FORMAT_VERSION:
            raise ConfigError(str(path), "format", f"expected a cosim.step_model file of version {FORMAT_VERSION}")
        grid = StepGrid(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["grid"].items()})
        expected = fingerprint(base, kernels, topology, backend, overheads, grid)
        saved = data["fingerprint"]
        differ = [k for k in expected if saved.get(k) != expected[k]]
        if differ:
            raise ConfigError(str(path), "fingerprint", f"the saved step model was made for another "
                                                        f"{', '.join(differ)} than the one given")
        fill = FillStats(**data.get("fill", {}))
        return cls(query_neutral_spec(base), grid, saved, data["tables"], fill)


def _chunk(c) -> PrefillChunk:
    return c if isinstance(c, PrefillChunk) else PrefillChunk(int(c[0]), int(c[1]))
