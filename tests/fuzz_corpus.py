"""Mutated inputs for the fuzz tests (``tests/test_fuzz_inputs.py``, hypothesis) and the larger
corpus run (``benchmarks/fuzz.py``, seeded ``random``): topology presets and generator
parameters, YAML text oddities, model ``config.json`` objects and text, the flow and collective
API, and unit strings.

Every mutation is drawn through a :class:`Chooser`, so hypothesis (shrinking, derandomized runs)
and a plain ``random.Random`` share the same corpus. A target returns ``"valid"`` or raises a
:class:`cosim.errors.CosimError`; any other exception is a defect.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class Chooser(Protocol):
    def choice(self, options: Sequence[Any]) -> Any: ...

    def integer(self, lo: int, hi: int) -> int: ...


class RandomChooser:
    """Choices from a seeded ``random.Random``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


#: Values that replace a field: huge, negative, non-finite, wrong types, long, nested.
BAD_VALUES: tuple[Callable[[], Any], ...] = (
    lambda: 2**64, lambda: 2**63 - 1, lambda: 2**62, lambda: 2**31, lambda: 10**7, lambda: 65_537,
    lambda: -1, lambda: 0, lambda: 1, lambda: 3, lambda: 1.5, lambda: 1e300, lambda: -1e300, lambda: 1e-300,
    lambda: 1e12, lambda: float("nan"), lambda: float("inf"), lambda: float("-inf"), lambda: True, lambda: None,
    lambda: "", lambda: "x" * 300, lambda: "x" * 200_000, lambda: "[/bold] [red]", lambda: "1e-300bps",
    lambda: "1e400B", lambda: "1TiB", lambda: "0x10", lambda: "2:1", lambda: "1e300:1", lambda: ".inf",
    lambda: "yes", lambda: "400Gbps", lambda: "1us", lambda: "5s", lambda: "4096", lambda: "63",
    lambda: 63, lambda: 65_001, lambda: [], lambda: {}, lambda: [1, 2, 3], lambda: {"a": 1},
    lambda: _nested(100), lambda: _nested(1000), lambda: list(range(100_000)), lambda: "\x00\ud800",
)

#: Text snippets spliced into YAML files.
YAML_SNIPPETS: tuple[str, ...] = (
    "\n  num_nodes: 2\n", "\nname: dup\n", "&a [*a]", "*undefined", "!!python/object:os.system ls",
    "\t", "\x00", "\ufeff", "{{{{", "]]]", "- - - - - - -", "0x10", "1_000", "2:1", ".inf", "yes",
    "'unterminated", "\"\\xZZ\"", "[" * 200 + "]" * 200, "{a: " * 100 + "1" + "}" * 100, "é", "\u202e",
    "key: &x " + "[" + ", ".join(["lol"] * 9) + "]\n",
)

#: Strings for the unit parsers.
UNIT_STRINGS: tuple[str, ...] = (
    "4096", "4096B", "4KiB", "1e400B", "1e400Gbps", "1e-400s", "0.5B", "-1B", "1TiB", "1PiB", "400Gbps",
    "450GB/s", "1us", "1e300s", "nan", "inf", "2:1", "2:0", "1:0.0", "0-7,16", "0-100000000", "5-3", "1,1",
    "9" * 40, "1" + "0" * 5000 + "B", " 8 ", "", "٣", "1_000", "0x10", "1e3B", "1.5KiB",
)


@lru_cache(maxsize=None)
def presets() -> tuple[tuple[str, str], ...]:
    """(name, YAML text) of the shipped topology presets."""
    return tuple((p.stem, p.read_text()) for p in sorted((ROOT / "topologies").glob("*.yaml")))


@lru_cache(maxsize=None)
def preset_docs() -> tuple[tuple[str, Any], ...]:
    from cosim.topology.strict_yaml import load_yaml_text

    return tuple((name, load_yaml_text(text, name)) for name, text in presets())


@lru_cache(maxsize=None)
def model_configs() -> tuple[tuple[str, dict], ...]:
    """A few real ``config.json`` objects (the bundled aiconfigurator-core configs)."""
    from cosim.models.registry import bundled_configs_dir

    d = bundled_configs_dir()
    if d is None:
        return ()
    files = sorted(d.glob("*_config.json"))
    files = [f for f in files if not f.name.endswith("_hf_quant_config.json")]
    picked = files[:: max(1, len(files) // 12)]
    return tuple((f.name, json.loads(f.read_text())) for f in picked)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every (container path, key) inside a nested dict/list document (at most 12 levels)."""
    out = []
    if len(prefix) > 12:
        return out
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:50]):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _mutate_doc(doc: Any, c: Chooser, extra_keys: Sequence[tuple[tuple, str]] = ()) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(c.integer(1, 3)):
        paths = _paths(doc)
        op = c.choice(("replace", "replace", "replace", "delete", "add", "set_known"))
        if op == "set_known" and extra_keys:
            where, key = c.choice(list(extra_keys))
            parent = doc
            for k in where:
                parent = parent.get(k) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent[key] = c.choice(BAD_VALUES)()
            continue
        if not paths:
            return c.choice(BAD_VALUES)()
        path = c.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[c.choice(("unknown_key", "x" * 500, 7, "kind"))] = c.choice(BAD_VALUES)()
        else:
            parent[key] = c.choice(BAD_VALUES)()
    return doc


def _generator_keys() -> list[tuple[tuple, str]]:
    from cosim.topology.generators import GENERATORS

    keys = set()
    for _, cls in GENERATORS.items():
        for f in __import__("dataclasses").fields(cls):
            name = f.name
            for suffix in ("_bps", "_s", "_bytes"):
                name = name.removesuffix(suffix)
            keys.add(name)
    return [(("generator",), k) for k in sorted(keys)] + [((), "description"), ((), "name")]


# --- targets -----------------------------------------------------------------------------------

def topology_case(c: Chooser) -> str:
    """A preset document with 1-3 mutations, validated by the loader."""
    from cosim.topology.loader import topology_from_dict

    name, doc = c.choice(preset_docs())
    topology_from_dict(_mutate_doc(doc, c, _generator_keys()), source=f"{name}.yaml")
    return "valid"


def generator_case(c: Chooser) -> str:
    """A generator of random kind with random (often absurd) parameters."""
    from cosim.topology.generators import GENERATORS
    from cosim.topology.loader import topology_from_dict

    kind = c.choice(sorted(k for k, _ in GENERATORS.items()))
    params: dict[str, Any] = {"kind": kind}
    keys = [k for _, k in _generator_keys() if k not in ("description", "name")]
    plausible = {"bandwidth": ("100Gbps", "400Gbps", "450GB/s", "1kbps"), "latency": ("1us", "500ns", "0s"),
                 "mtu": (64, 4096, 9000, 65000), "oversubscription": (1, 2, "2:1", 1024)}
    for _ in range(c.integer(1, 4)):
        key = c.choice(keys)
        if c.choice((True, False)):  # a bad value
            params[key] = c.choice(BAD_VALUES)()
        else:  # a plausible one (valid or near a limit)
            kind_of = next((v for k, v in plausible.items() if k in key), (0, 1, 2, 4, 8, 16, 64, 1024))
            params[key] = c.choice(kind_of)
    topology_from_dict({"name": "fuzz", "generator": params})
    return "valid"


def yaml_case(c: Chooser) -> str:
    """A preset file with text spliced in, saved in a random encoding, loaded from disk."""
    from cosim.topology.loader import load_topology

    name, text = c.choice(presets())
    for _ in range(c.integer(1, 3)):
        at = c.integer(0, len(text))
        op = c.choice(("insert", "replace", "cut"))
        snippet = c.choice(YAML_SNIPPETS)
        if op == "insert":
            text = text[:at] + snippet + text[at:]
        elif op == "replace":
            text = text[:at] + snippet + text[at + len(snippet):]
        else:
            text = text[:at] + text[at + c.integer(1, 40):]
    encoding = c.choice(("utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"))
    try:
        data = text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")
    except UnicodeEncodeError:
        data = text.encode("utf-8", errors="replace")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_bytes(data)
        load_topology(path)
    return "valid"


def model_case(c: Chooser) -> str:
    """A real config.json with 1-3 mutated fields, or its JSON text mutated."""
    from cosim.models._fields import loads_json
    from cosim.models.loader import parse_config

    configs = model_configs()
    if not configs:
        return "valid"
    name, cfg = c.choice(configs)
    if c.choice((True, False, False)):
        text = json.dumps(cfg)
        at = c.integer(0, len(text))
        snippet = c.choice(('NaN', 'Infinity', '-Infinity', '1e400', '9' * 400, '[' * 2000, '"\\ud800"', '{"a":',
                            '"hidden_size": 1e12,', '"num_hidden_layers": 18446744073709551616,'))
        text = text[:at] + snippet + text[at:]
        parse_config(loads_json(text, name), source=name)
    else:
        keys = [((), k) for k in ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads",
                                  "num_key_value_heads", "n_routed_experts", "num_experts_per_tok",
                                  "moe_intermediate_size", "intermediate_size", "head_dim", "model_type",
                                  "quantization_config", "layer_types", "mlp_only_layers", "text_config")]
        parse_config(_mutate_doc(cfg, c, keys), source=name)
    return "valid"


@lru_cache(maxsize=None)
def _small_topology():
    from cosim.topology.loader import topology_from_dict

    return topology_from_dict({"name": "fuzz-star", "generator": {"kind": "hgx_cluster", "num_nodes": 2}})


_SIZES = (0, 1, 4096, 1 << 20, 1 << 40, 1 << 50, (1 << 50) + 1, 2**61, 2**62, 2**63 - 1, 2**63, -1, 1.5,
          1024.0, float("nan"), None, "100", True, np.int64(7), np.uint64(2**63), [1, 2])
_RANKS = (0, 1, 7, 15, 16, -1, 2**31, 1.5, "1", None, True, np.int32(3))


#: Collective sizes that are valid but make millions of flows (up to minutes and several GB each
#: at the MAX_FLOWS_PER_COLLECTIVE limit): only in the large corpus (``big=True``).
_BIG_VALID_SIZES = (1 << 40, 1 << 50)


def flow_case(c: Chooser, big: bool = False) -> str:
    """Random flows and collectives on a 16-GPU topology, simulated on the flow backend; without
    ``big``, collectives take no size that is valid but huge (the fuzz test's minute budget)."""
    sizes = _SIZES if big else tuple(s for s in _SIZES if not (isinstance(s, int) and s in _BIG_VALID_SIZES))
    from cosim.network import collectives as C
    from cosim.network.backends import simulate
    from cosim.network.flows import FlowSet
    from cosim.network.libraries import COLLECTIVES, build_collective

    topo = _small_topology()
    fs = FlowSet()
    for _ in range(c.integer(1, 3)):
        op = c.choice(("add", "add_many", "collective", "named", "ring_chunks"))
        if op == "add":
            fs.add(c.choice(_RANKS), c.choice(_RANKS), c.choice(_SIZES),
                   after=c.choice(((), (0,), (5,), (1.5,), ("0",))),
                   earliest_start_s=c.choice((0.0, 1e-6, -1.0, float("inf"), 1e300, "0")),
                   tag=c.choice(("", "t", "x" * 1000, 5)))
        elif op == "add_many":
            n = c.integer(0, 5)
            fs.add_many(c.choice((list(range(n)), [c.choice(_RANKS)] * n, np.arange(n, dtype=np.uint64), "0")),
                        c.choice((list(range(1, n + 1)), [c.choice(_RANKS)] * n)),
                        c.choice((c.choice(_SIZES), [c.choice(_SIZES)] * n, np.full(n, 2**62, dtype=np.uint64))))
        elif op == "collective":
            fn = c.choice((C.ring_all_reduce, C.ring_all_gather, C.ring_reduce_scatter, C.tree_all_reduce,
                           C.one_shot_all_reduce, C.two_shot_all_reduce, C.nvls_all_reduce))
            ranks = c.choice((list(range(8)), list(range(16)), [0, 0], [0], ["0", "1"], [0, 1.5], list(range(20))))
            fn(fs, ranks, c.choice(sizes))
        elif op == "named":
            build_collective(fs, c.choice(sorted(COLLECTIVES) + ["nope"]),
                             c.choice((range(16), range(8), [0, 1], range(2, 5))), c.choice(sizes),
                             chunk_bytes=c.choice((None, 1 << 20, 1, 0, -5, 1.5) if big else (None, 1 << 20, 0, -5, 1.5)))
        else:
            ring_sizes = (1 << 20, 1 << 30, 1 << 40) if big else (1 << 12, 1 << 16, 1 << 36)
            chunks = (1, 64, 4096, 1 << 20) if big else (1, 1 << 10, 1 << 20)
            C.ring_all_reduce(fs, list(range(c.integer(2, 16 if big else 8))), c.choice(ring_sizes),
                              chunk_bytes=c.choice(chunks))
    if len(fs) <= 200_000:
        simulate(topo, fs, "flow")
    return "valid"


def units_case(c: Chooser) -> str:
    """The unit parsers (the CLI's --size, --gpus ... and YAML unit fields) on odd strings."""
    from cosim.units import parse_bandwidth_bps, parse_gpu_ranks, parse_ratio, parse_size_bytes, parse_time_s

    parse = c.choice((parse_bandwidth_bps, parse_time_s, parse_size_bytes, parse_ratio, parse_gpu_ranks))
    text = c.choice(UNIT_STRINGS)
    if c.choice((False, False, True)):
        text = c.choice(BAD_VALUES)()
    parse(text)
    return "valid"


#: Every target by name.
TARGETS: dict[str, Callable[[Chooser], str]] = {
    "topology": topology_case, "generator": generator_case, "yaml": yaml_case, "model": model_case,
    "flows": flow_case, "units": units_case,
}
