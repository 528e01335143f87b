"""Flows: the unit of traffic every collective is expressed in and every backend simulates.

A flow moves ``size_bytes`` from GPU ``src`` to GPU ``dst`` (ranks of the topology). It starts at
the latest of ``earliest_start_s``, the finish times of the flows in ``after`` (their last byte
received) and the send times of the flows in ``after_sent`` (their last byte has left the source:
this is how a communication library keeps several chunks in flight on one channel). Dependencies
may only point at flows added before, so a :class:`FlowSet` is always a DAG.

In the arrays handed to the backends (:class:`RoutedFlows`), a "sent" dependency on flow ``k`` is
encoded as ``-k - 1``.

Every value is checked where it enters (:mod:`cosim.limits`): GPU ranks, path keys and
dependencies are integers (``1.5`` or ``"1"`` is an error, not GPU 1), sizes are integers from 0
to ``MAX_FLOW_BYTES``, start times finite, and a flow set holds at most ``MAX_FLOWS`` flows whose
sizes sum to at most ``MAX_TOTAL_BYTES``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Iterable

import numpy as np

from cosim import limits as L
from cosim.errors import FlowError
from cosim.limits import quote
from cosim.topology import Router, Topology


@dataclass(frozen=True)
class Flow:
    """One flow as seen by users (a row of a :class:`FlowSet`)."""

    src: int
    dst: int
    size_bytes: int
    earliest_start_s: float = 0.0
    deps: tuple[int, ...] = ()
    tag: str = ""
    path_key: int = 0
    sent_deps: tuple[int, ...] = ()


class _Column:
    """A growable 1-D numpy array (amortized doubling)."""

    __slots__ = ("data", "n")

    def __init__(self, dtype, capacity: int = 16) -> None:
        self.data = np.zeros(capacity, dtype=dtype)
        self.n = 0

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > len(self.data):
            grown = np.zeros(max(need, 2 * len(self.data)), dtype=self.data.dtype)
            grown[:self.n] = self.data[:self.n]
            self.data = grown

    def append(self, value) -> None:
        if self.n == len(self.data):
            self.reserve(1)
        self.data[self.n] = value
        self.n += 1

    def extend(self, values) -> None:
        values = np.asarray(values)
        self.reserve(len(values))
        self.data[self.n:self.n + len(values)] = values
        self.n += len(values)

    def view(self) -> np.ndarray:
        return self.data[:self.n]


class _DepsView(Sequence):
    """``fs.deps[i]`` / ``fs.sent_deps[i]``: tuples of flow indices, read from the columnar store."""

    def __init__(self, fs: "FlowSet", sent: bool) -> None:
        self._fs, self._sent = fs, sent

    def __len__(self) -> int:
        return len(self._fs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        fs = self._fs
        i = range(len(fs))[i]
        lo, hi = fs._dep_offsets.data[i], fs._dep_offsets.data[i + 1]
        d = fs._dep_flows.data[lo:hi]
        return tuple(int(-x - 1) for x in d if x < 0) if self._sent else tuple(int(x) for x in d if x >= 0)


class _TagsView(Sequence):
    """``fs.tags``: the flows' tags (stored as indices into a table of distinct strings)."""

    def __init__(self, fs: "FlowSet") -> None:
        self._fs = fs

    def __len__(self) -> int:
        return len(self._fs)

    def __getitem__(self, i):
        fs = self._fs
        if isinstance(i, slice):
            return [fs._tag_names[t] for t in fs._tag_ids.view()[i].tolist()]
        return fs._tag_names[int(fs._tag_ids.view()[i])]

    def __iter__(self):
        names = self._fs._tag_names
        return (names[t] for t in self._fs._tag_ids.view().tolist())

    def __contains__(self, tag) -> bool:
        fs = self._fs
        t = fs._tag_index.get(tag)
        return t is not None and bool(np.any(fs._tag_ids.view() == t))

    def __array__(self, dtype=None, copy=None):
        names = np.asarray(self._fs._tag_names, dtype=object) if self._fs._tag_names else np.zeros(0, dtype=object)
        out = names[self._fs._tag_ids.view()] if len(self) else np.zeros(0, dtype=object)
        return out if dtype is None else out.astype(dtype)

    def __arrow_array__(self, type=None):
        import pyarrow as pa

        fs = self._fs
        tags = pa.DictionaryArray.from_arrays(pa.array(fs._tag_ids.view()), pa.array(fs._tag_names, pa.string()))
        return tags.cast(type or pa.string())

    def __eq__(self, other):
        return list(self) == list(other) if isinstance(other, (list, tuple, _TagsView)) else NotImplemented


class FlowSet:
    """A growing, columnar list of flows with dependencies.

    Columns are numpy arrays (``src``, ``dst``, ``size_bytes``, ``earliest_start_s``,
    ``path_keys``; views of the first ``len(fs)`` entries, writable), ``deps``/``sent_deps``
    (sequences of tuples) and ``tags`` (a sequence of strings). :meth:`add` appends one flow,
    :meth:`add_many` a whole block from arrays (how the large collectives build millions of
    flows without a Python object per flow).

    >>> fs = FlowSet()
    >>> a = fs.add(0, 1, 1 << 20)
    >>> b = fs.add(1, 2, 1 << 20, after=[a])   # starts when flow a has been received
    >>> len(fs), fs[b].deps
    (2, (0,))
    """

    def __init__(self) -> None:
        self._src = _Column(np.int32)
        self._dst = _Column(np.int32)
        self._size = _Column(np.int64)
        self._start = _Column(np.float64)
        self._key = _Column(np.int64)
        self._tag_ids = _Column(np.int32)
        self._dep_offsets = _Column(np.int64)
        self._dep_offsets.append(0)
        self._dep_flows = _Column(np.int32)  # k: after flow k received; -k-1: after flow k sent
        self._tag_names: list[str] = []
        self._tag_index: dict[str, int] = {}

    def __len__(self) -> int:
        return self._src.n

    @property
    def src(self) -> np.ndarray:
        """Source GPU rank of every flow (int32 view)."""
        return self._src.view()

    @property
    def dst(self) -> np.ndarray:
        """Destination GPU rank of every flow (int32 view)."""
        return self._dst.view()

    @property
    def size_bytes(self) -> np.ndarray:
        """Bytes of every flow (int64 view)."""
        return self._size.view()

    @property
    def earliest_start_s(self) -> np.ndarray:
        """Earliest start of every flow (float64 view; writable)."""
        return self._start.view()

    @property
    def path_keys(self) -> np.ndarray:
        """Path key (queue pair) of every flow (int64 view)."""
        return self._key.view()

    @property
    def deps(self) -> Sequence[tuple[int, ...]]:
        """Flows each flow waits to be received."""
        return _DepsView(self, sent=False)

    @property
    def sent_deps(self) -> Sequence[tuple[int, ...]]:
        """Flows each flow waits to have been sent."""
        return _DepsView(self, sent=True)

    @property
    def tags(self) -> Sequence[str]:
        """Tag of every flow."""
        return _TagsView(self)

    @property
    def dep_offsets(self) -> np.ndarray:
        """CSR offsets of the dependencies (int64, ``len(fs) + 1``)."""
        return self._dep_offsets.view()

    @property
    def dep_flows(self) -> np.ndarray:
        """Encoded dependencies (int32): ``k`` after flow k is received, ``-k-1`` after it is sent."""
        return self._dep_flows.view()

    def tag_id(self, tag: str) -> int:
        t = self._tag_index.get(tag)
        if t is None:
            t = self._tag_index[tag] = len(self._tag_names)
            self._tag_names.append(tag)
        return t

    def __getitem__(self, i: int) -> Flow:
        i = range(len(self))[i]
        return Flow(int(self._src.data[i]), int(self._dst.data[i]), int(self._size.data[i]),
                    float(self._start.data[i]), self.deps[i], self.tags[i], int(self._key.data[i]),
                    self.sent_deps[i])

    def add(self, src: int, dst: int, size_bytes: int, *, after: Iterable[int] = (),
            earliest_start_s: float = 0.0, tag: str = "", path_key: int = 0,
            after_sent: Iterable[int] = ()) -> int:
        """Append a flow and return its index.

        ``after`` lists flows that must be received first; ``after_sent`` flows whose last byte
        must have left their source first.
        """
        n = len(self)
        if n >= L.MAX_FLOWS.value:
            raise _too_many(n + 1)
        deps = _dep_list(n, "after", after)
        sent_deps = _dep_list(n, "after_sent", after_sent)
        for d in deps + sent_deps:
            if not 0 <= d < n:
                raise FlowError(f"flow {n}: dependency {d} must be the index of an earlier flow (0..{n - 1})")
        size_bytes = _check_size(n, size_bytes)
        earliest_start_s = _check_start(n, earliest_start_s)
        src = _check_int(n, "src", src, _INT32)
        dst = _check_int(n, "dst", dst, _INT32)
        path_key = _check_int(n, "path_key", path_key, _INT64)
        _check_tag(n, tag)
        if src == dst and size_bytes > 0:
            raise FlowError(f"flow {n}: src and dst are both GPU {src}; only 0-byte flows (barriers) may do that")
        self._src.append(int(src))
        self._dst.append(int(dst))
        self._size.append(int(size_bytes))
        self._start.append(float(earliest_start_s))
        self._key.append(int(path_key))
        self._tag_ids.append(self.tag_id(tag))
        for d in deps:
            self._dep_flows.append(d)
        for d in sent_deps:
            self._dep_flows.append(-d - 1)
        self._dep_offsets.append(self._dep_flows.n)
        return n

    def add_many(self, src, dst, size_bytes, *, after: Iterable[int] = (), after_sent: Iterable[int] = (),
                 earliest_start_s: float = 0.0, tag: str = "", path_key=0,
                 deps: tuple[np.ndarray, np.ndarray] | None = None) -> range:
        """Append a block of flows from arrays (or scalars, broadcast) and return their indices.

        Every flow of the block waits for the same ``after`` / ``after_sent`` flows (earlier
        than the block), or, with ``deps = (offsets, encoded)``, for its own: flow ``k`` of the
        block waits for ``encoded[offsets[k]:offsets[k + 1]]`` (``j``: flow j received, ``-j-1``:
        flow j sent; each an earlier flow, possibly of the same block). Same checks as :meth:`add`.
        """
        first = len(self)
        cols = {}
        for name, value in (("src", src), ("dst", dst), ("size_bytes", size_bytes), ("path_key", path_key)):
            try:
                cols[name] = np.asarray(value)
            except (ValueError, TypeError, OverflowError) as exc:
                raise FlowError(f"flows {first}..: {name} must be an integer array, got {quote(value)} "
                                f"({str(exc)[:80]})") from None
            if cols[name].ndim > 1:
                raise FlowError(f"flows {first}..: {name} must be a 1-D array or a scalar, got shape "
                                f"{cols[name].shape}")
        sizes = {np.size(c) for c in cols.values()} - {1}
        if len(sizes) > 1:
            raise FlowError(f"flows {first}..: src, dst, size_bytes and path_key differ in length "
                            f"({', '.join(f'{n}: {np.size(c)}' for n, c in cols.items())})")
        k = int(sizes.pop()) if sizes else 1
        if k and first + k > L.MAX_FLOWS.value:
            raise _too_many(first + k)
        src = np.broadcast_to(cols["src"], (k,))
        dst = np.broadcast_to(cols["dst"], (k,))
        size = np.broadcast_to(cols["size_bytes"], (k,))
        keys = np.broadcast_to(cols["path_key"], (k,))
        if k == 0:
            return range(first, first)
        for name, col in (("src", src), ("dst", dst), ("size_bytes", size), ("path_key", keys)):
            if col.dtype.kind not in "iu":
                if col.dtype.kind == "f" and name == "size_bytes":
                    raise FlowError(f"flow {first}: size_bytes must be a non-negative integer, got {quote(col[0])}")
                raise FlowError(f"flows {first}..: {name} must be integers, got dtype {col.dtype}")
        bad = np.nonzero(size < 0)[0] if len(size) and size.min() < 0 else ()
        if len(bad):
            raise FlowError(f"flow {first + int(bad[0])}: size_bytes must be a non-negative integer, "
                            f"got {int(size[bad[0]])}")
        if len(size) and int(size.max()) > L.MAX_FLOW_BYTES.value:
            b = int(np.argmax(size))
            raise _too_large(first + b, int(size[b]))
        if len(keys) and keys.dtype.kind == "u" and int(keys.max()) > _INT64[1]:
            raise FlowError(f"flows {first}..: path_key out of range (int64)")
        _check_tag(first, tag)
        same = src == dst
        bad = np.nonzero(same & (size > 0))[0] if same.any() else ()
        del same
        if len(bad):
            b = int(bad[0])
            raise FlowError(f"flow {first + b}: src and dst are both GPU {int(src[b])}; only 0-byte flows "
                            "(barriers) may do that")
        for name, col, (lo, hi) in (("src", src, _INT32), ("dst", dst, _INT32)):
            if len(col) and (int(col.min()) < lo or int(col.max()) > hi):
                raise FlowError(f"flows {first}..: {name} out of range")
        earliest_start_s = _check_start(first, earliest_start_s)
        shared = _dep_list(first, "after", after) + [-d - 1 for d in _dep_list(first, "after_sent", after_sent)]
        for d in shared:
            j = d if d >= 0 else -d - 1
            if not 0 <= j < first:
                raise FlowError(f"flow {first}: dependency {j} must be the index of an earlier flow (0..{first - 1})")
        if deps is not None:
            if shared:
                raise FlowError("add_many: give either shared after/after_sent or per-flow deps, not both")
            try:
                offsets = np.asarray(deps[0], dtype=np.int64)
                encoded = np.asarray(deps[1], dtype=np.int64)
            except (ValueError, TypeError, OverflowError, IndexError, KeyError):
                raise FlowError("add_many: deps must be (offsets, encoded) integer arrays") from None
            if offsets.ndim != 1 or encoded.ndim != 1:
                raise FlowError("add_many: deps must be (offsets, encoded) 1-D integer arrays")
            if offsets.shape != (k + 1,) or offsets[0] != 0 or offsets[-1] != len(encoded) or \
                    np.any(np.diff(offsets) < 0):
                raise FlowError(f"add_many: deps offsets must be {k + 1} non-decreasing entries from 0 to "
                                f"{len(encoded)}")
            if len(encoded):
                owner = first + np.repeat(np.arange(k, dtype=np.int64), np.diff(offsets))
                target = np.where(encoded >= 0, encoded, -encoded - 1)
                bad = np.nonzero((target < 0) | (target >= owner))[0]
                if len(bad):
                    b = int(bad[0])
                    raise FlowError(f"flow {int(owner[b])}: dependency {int(target[b])} must be the index of an "
                                    f"earlier flow (0..{int(owner[b]) - 1})")
            self._dep_flows.extend(encoded.astype(np.int32))
            self._dep_offsets.extend(self._dep_offsets.data[self._dep_offsets.n - 1] + offsets[1:])
        else:
            base = int(self._dep_offsets.data[self._dep_offsets.n - 1])
            if shared:
                self._dep_flows.extend(np.tile(np.asarray(shared, dtype=np.int32), k))
            step = len(shared)
            self._dep_offsets.extend(np.arange(base + step, base + step * k + 1, step, dtype=np.int64) if step
                                     else np.broadcast_to(np.int64(base), (k,)))
        self._src.extend(src)
        self._dst.extend(dst)
        self._size.extend(size)
        self._start.reserve(k)
        self._start.data[self._start.n:self._start.n + k] = float(earliest_start_s)
        self._start.n += k
        self._key.extend(keys)
        t = self.tag_id(tag)
        self._tag_ids.reserve(k)
        self._tag_ids.data[self._tag_ids.n:self._tag_ids.n + k] = t
        self._tag_ids.n += k
        return range(first, first + k)

    def barrier(self, after: Iterable[int], gpu: int = 0, tag: str = "barrier") -> int:
        """A 0-byte flow that finishes when all flows in ``after`` have finished (a join point)."""
        return self.add(gpu, gpu, 0, after=after, tag=tag)

    def extend(self, flows: Sequence[Flow]) -> list[int]:
        """Append :class:`Flow` records (their deps index this set) and return their indices."""
        return [self.add(f.src, f.dst, f.size_bytes, after=f.deps, earliest_start_s=f.earliest_start_s,
                         tag=f.tag, path_key=f.path_key, after_sent=f.sent_deps) for f in flows]

    def total_bytes(self) -> int:
        """Sum of the flows' sizes, exact (summed in blocks of Python integers when an int64 sum
        could overflow)."""
        size = self.size_bytes
        if len(size) and int(size.max()) * len(size) >= 1 << 62:
            return sum(int(x) for x in np.add.reduceat(size, np.arange(0, len(size), 1 << 10)))
        return int(size.sum())


_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _check_int(flow: int, name: str, value: Any, bounds: tuple[int, int]) -> int:
    """``value`` as an int within ``bounds``; a bool, float (``1.5`` or ``1.0``), str or None is an error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise FlowError(f"flow {flow}: {name} must be an integer (a GPU rank or key), got "
                        f"{type(value).__name__} {quote(value)}")
    v = int(value)
    if not bounds[0] <= v <= bounds[1]:
        raise FlowError(f"flow {flow}: {name} {quote(v)} out of range")
    return v


def _check_size(flow: int, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise FlowError(f"flow {flow}: size_bytes must be a non-negative integer, got "
                        f"{type(value).__name__} {quote(value)}")
    v = int(value)
    if v < 0:
        raise FlowError(f"flow {flow}: size_bytes must be a non-negative integer, got {quote(v)}")
    if v > L.MAX_FLOW_BYTES.value:
        raise _too_large(flow, v)
    return v


def _too_large(flow: int, size: int) -> FlowError:
    return FlowError(f"flow {flow}: size_bytes {quote(size)} exceeds the limit MAX_FLOW_BYTES = 2**50 bytes "
                     f"({L.MAX_FLOW_BYTES.reason})")


def _too_many(count: int) -> FlowError:
    return FlowError(f"{count:,} flows exceed the limit MAX_FLOWS = {L.MAX_FLOWS.value:,} flows per simulation "
                     f"({L.MAX_FLOWS.reason})")


def _check_start(flow: int, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise FlowError(f"flow {flow}: earliest_start_s must be a number of seconds, got "
                        f"{type(value).__name__} {quote(value)}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v) or v < 0 or v > L.MAX_SIM_TIME_S.value:
        raise FlowError(f"flow {flow}: earliest_start_s must be finite, >= 0 and at most MAX_SIM_TIME_S = "
                        f"{L.MAX_SIM_TIME_S.value:g} s, got {quote(value)}")
    return v


def _check_tag(flow: int, tag: Any) -> None:
    if not isinstance(tag, str):
        raise FlowError(f"flow {flow}: tag must be a string, got {type(tag).__name__} {quote(tag)}")
    if len(tag) > L.MAX_NAME_CHARS.value:
        raise FlowError(f"flow {flow}: tag {quote(tag, 40)} has {len(tag):,} characters; the limit "
                        f"MAX_NAME_CHARS is {L.MAX_NAME_CHARS.value}")


def _dep_list(flow: int, name: str, deps: Any) -> list[int]:
    """Flow indices of ``after`` / ``after_sent``: an iterable of integers."""
    if isinstance(deps, (str, bytes)) or not isinstance(deps, Iterable):
        raise FlowError(f"flow {flow}: {name} must be a list of flow indices, got {quote(deps)}")
    if isinstance(deps, np.ndarray):
        if deps.dtype.kind not in "iu":
            raise FlowError(f"flow {flow}: {name} must hold flow indices (integers), got dtype {deps.dtype}")
        return [int(d) for d in deps.reshape(-1)]
    out = []
    for d in deps:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
            raise FlowError(f"flow {flow}: {name} must hold flow indices (integers), got "
                            f"{type(d).__name__} {quote(d)}")
        out.append(int(d))
    return out


def check_packet_budget(routed: "RoutedFlows") -> None:
    """Refuse a packet-level run of more than ``MAX_PACKETS`` packets (a 1 TiB flow is 2^28
    packets: hours in the packet engine) before it starts; the flow backend has no such limit."""
    total = int(routed.num_packets.sum()) if len(routed.num_packets) else 0
    if total > L.MAX_PACKETS.value:
        raise FlowError(f"the flows make {total:,} packets, more than the limit MAX_PACKETS = "
                        f"{L.MAX_PACKETS.value:,} of the packet backend ({L.MAX_PACKETS.reason})")


@dataclass
class RoutedFlows:
    """A flow set resolved on a topology: the arrays both backends consume (CSR routes and deps)."""

    src_node: np.ndarray           # int32 [F]
    dst_node: np.ndarray           # int32 [F]
    size_bytes: np.ndarray         # int64 [F]
    earliest_start_s: np.ndarray   # float64 [F]
    payload_per_packet: np.ndarray  # int32 [F], min MTU along the route
    num_packets: np.ndarray        # int64 [F]
    wire_bytes: np.ndarray         # int64 [F], payload + one header per packet
    route_offsets: np.ndarray      # int64 [F+1]
    route_links: np.ndarray        # int32 [sum of hops], directed link ids
    dep_offsets: np.ndarray        # int64 [F+1]
    dep_flows: np.ndarray          # int32, k = after flow k received, -k-1 = after flow k sent
    header_bytes: int

    @property
    def num_flows(self) -> int:
        return len(self.size_bytes)

    def route(self, f: int) -> np.ndarray:
        return self.route_links[self.route_offsets[f]:self.route_offsets[f + 1]]


def route_flows(topology: Topology, flows: FlowSet, router: Router | None = None) -> RoutedFlows:
    """Validate ``flows`` against ``topology`` and compute routes and packetization (all flows at
    once, through :meth:`cosim.topology.Router.routes`)."""
    n = len(flows)
    if n > L.MAX_FLOWS.value:
        raise _too_many(n)
    total = flows.total_bytes()
    if total > L.MAX_TOTAL_BYTES.value:
        raise FlowError(f"the flows move {total:,} bytes in total, more than the limit MAX_TOTAL_BYTES = 2**53 "
                        f"bytes ({L.MAX_TOTAL_BYTES.reason})")
    g = topology.num_gpus
    src, dst = flows.src, flows.dst
    for name, column in (("src", src), ("dst", dst)):
        bad = np.nonzero((column < 0) | (column >= g))[0]
        if len(bad):
            i = int(bad[0])
            raise FlowError(f"flow {i}: {name} GPU {int(column[i])} does not exist; topology "
                            f"{topology.name!r} has GPUs 0..{g - 1}")
    router = router or Router(topology)
    route_offsets, route_links = router.routes(src, dst, flows.path_keys)
    mtu = topology.link_mtu_bytes
    hops = np.diff(route_offsets)
    if len(mtu) and mtu.min() == mtu.max():
        payload = np.full(n, int(mtu[0]), dtype=np.int32)
    else:
        payload = np.full(n, int(mtu.max()) if len(mtu) else 0, dtype=np.int32)
        if len(route_links):
            has_route = hops > 0
            link_mtu = mtu.astype(np.int32)[route_links // 2]
            payload[has_route] = np.minimum.reduceat(link_mtu, route_offsets[:-1][has_route])
    size = flows.size_bytes
    num_packets = -(-size // payload)
    header = topology.transport.header_bytes
    gpu_nodes = np.asarray(topology.gpu_nodes, dtype=np.int32)
    return RoutedFlows(
        src_node=gpu_nodes[src] if n else np.zeros(0, np.int32),
        dst_node=gpu_nodes[dst] if n else np.zeros(0, np.int32),
        size_bytes=size,
        earliest_start_s=flows.earliest_start_s,
        payload_per_packet=payload,
        num_packets=num_packets,
        wire_bytes=size + num_packets * header,
        route_offsets=route_offsets,
        route_links=route_links,
        dep_offsets=flows.dep_offsets,
        dep_flows=flows.dep_flows,
        header_bytes=header,
    )
