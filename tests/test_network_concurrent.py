"""Independent network simulations run concurrently (simulate_many, CollectiveNetwork.prefetch):
same results as one after the other, on several threads only for the backends that allow it."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from cosim.engine.step import CollectiveNetwork, simulate_step
from cosim.errors import ConfigError
from cosim.network import BACKENDS, CONCURRENT_BACKENDS, FlowSet, simulate, simulate_many
from cosim.network import collectives as C
from cosim.topology import load_topology


def _flow_sets() -> list[FlowSet]:
    """Four different collectives on 16 GPUs (unequal pairs: many events each)."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(4):
        fs = FlowSet()
        m = rng.integers(1, 40, size=(16, 16)) * 7168 * (k + 1)
        np.fill_diagonal(m, 0)
        C.all_to_all_v(fs, ranks=range(16), bytes_matrix=m, tag=f"a2a{k}")
        out.append(fs)
    return out


class _ThreadRecorder:
    """Wraps a registered backend and records the thread of every call."""

    def __init__(self, name: str):
        self.name, self.inner, self.threads = name, BACKENDS[name], []
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.threads.append(threading.get_ident())
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("backend", ["flow", "packet"])
def test_simulate_many_equals_one_simulation_after_the_other(backend, monkeypatch):
    topo = load_topology("h100-hgx-2node")
    sets = _flow_sets() if backend == "flow" else _flow_sets()[:2]
    alone = [simulate(topo, fs, backend) for fs in sets]
    recorder = _ThreadRecorder(backend)
    monkeypatch.setitem(BACKENDS, backend, recorder)
    together = simulate_many(topo, sets, backend, workers=4)
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.flow_finish_s, b.flow_finish_s)
        np.testing.assert_array_equal(a.links.tx_bytes, b.links.tx_bytes)
        assert a.completion_time_s == b.completion_time_s
    main = threading.get_ident()
    if backend in CONCURRENT_BACKENDS:
        assert main not in recorder.threads and len(set(recorder.threads)) >= 2  # worker threads
    else:  # ns-3 is one simulator per process: the calling thread, one run after the other
        assert set(recorder.threads) == {main}


def test_simulate_many_checks_its_arguments():
    topo = load_topology("h100-hgx-node")
    sets = _flow_sets()[:1]
    with pytest.raises(ConfigError, match="workers"):
        simulate_many(topo, sets, "flow", workers=0)
    with pytest.raises(ConfigError, match="routers"):
        simulate_many(topo, sets, "flow", routers=[None, None])
    with pytest.raises(ConfigError, match="backend"):
        simulate_many(topo, sets, "nope")
    assert simulate_many(topo, [], "flow") == []


def test_step_with_concurrent_simulations_equals_the_serial_one():
    pytest.importorskip("aiconfigurator_core")
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec

    model = load_model("deepseek-ai/DeepSeek-V3")
    topo = load_topology("h200-hgx-2node")
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    spec = StepSpec(model, Parallelism(tp=16, ep=16, dp_attention=True),
                    Precision.from_checkpoint(model, dispatch="fp8"), "generation", 32, prefix_tokens=2048,
                    moe_library="deepep_ll")
    serial_net, parallel_net = CollectiveNetwork(topo, "flow", workers=1), CollectiveNetwork(topo, "flow", workers=2)
    serial = simulate_step(spec, kernels, topo, network=serial_net)
    parallel = simulate_step(spec, kernels, topo, network=parallel_net)
    assert serial.network_simulations >= 2  # dispatch and combine at least: something ran concurrently
    assert parallel.step_time_s == serial.step_time_s
    np.testing.assert_array_equal(parallel.collective_duration_s, serial.collective_duration_s)
    np.testing.assert_array_equal(parallel.link_tx_bytes, serial.link_tx_bytes)
    assert (parallel_net.simulations, parallel_net.lookups, parallel_net.hits) == \
           (serial_net.simulations, serial_net.lookups, serial_net.hits)
    # a second step of the same traffic answers every lookup from the memo
    again = simulate_step(dataclasses.replace(spec, prefix_tokens=4096), kernels, topo, network=parallel_net)
    assert again.network_simulations == 0 and parallel_net.hits > serial_net.hits
