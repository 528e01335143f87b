"""cosim explore: experiment specs, design points, load search under SLOs, resumable store, runners,
Pareto fronts and best per mode."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosim.errors import ConfigError
from cosim.explore import (
    best_per_mode, enumerate_points, evaluate_point, experiment_from_dict, explore, load_experiment, pareto_front,
)
from cosim.explore.evaluate import TIMING_COLUMNS

TINY = {
    "name": "tiny", "model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-node", "gpus": 8,
    "workloads": [{"workload": "chat", "slo": {"ttft_ms": 300, "tpot_ms": 12}}],
    "space": {"modes": ["aggregated", "pd"], "replicas": [{"tp": 4, "ep": 4, "dp_attention": True}],
              "prefill_gpus": [4], "max_batch": [8, 16], "token_budget": [1024]},
    "load": {"concurrency": [4, 256], "attainment": 0.9, "steps": 3, "requests_per_user": 2, "min_requests": 16},
    "workers": 1,
}


def _stable(rows):
    """Rows without their timings (the only fields that may differ between runs), NaN as None
    (NaN != NaN)."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items() if k not in TIMING_COLUMNS}
            for r in rows]


def test_spec_errors_name_the_file_and_field(tmp_path):
    bad = dict(TINY, space={**TINY["space"], "modes": ["aggregated", "disagg"]})
    with pytest.raises(ConfigError, match="space.modes.*unknown mode 'disagg'"):
        experiment_from_dict(bad, "x.yaml")
    with pytest.raises(ConfigError, match="x.yaml: space.max_batches: unknown key .did you mean 'max_batch'"):
        experiment_from_dict(dict(TINY, space={**TINY["space"], "max_batches": [8]}), "x.yaml")
    with pytest.raises(ConfigError, match="model"):
        experiment_from_dict(dict(TINY, models=["a", "b"]), "x.yaml")
    with pytest.raises(ConfigError, match="load.concurrency"):
        experiment_from_dict(dict(TINY, load={"concurrency": [8, 2]}), "x.yaml")
    with pytest.raises(ConfigError, match="workloads\\[0\\].*no such file or workload preset"):
        experiment_from_dict(dict(TINY, workloads=["chatty"]), "x.yaml")
    (tmp_path / "e.yaml").write_text("name: e\nmodel: m\ntopology: t\ngpus: 8\nworkloads: [chat]\nworkers: yes\n")
    with pytest.raises(ConfigError, match="workers"):
        load_experiment(tmp_path / "e.yaml")


def test_enumeration_counts_keys_and_skips():
    spec = experiment_from_dict({**TINY, "gpus": 16, "space": {
        "modes": ["aggregated", "pd", "pd+afd", "aggregated+afd"],
        "replicas": [{"tp": 8, "ep": 8, "dp_attention": True}, {"tp": 4, "ep": 4, "dp_attention": True}],
        "prefill_gpus": [4, 8], "afd": {"gpus": [8], "attention_gpus": [2, 6, 8], "micro_batches": [2, 3]},
        "max_batch": [16, 32], "token_budget": [512, 1024], "mtp": [0, 1]}})
    e = enumerate_points(spec)
    modes = {m: sum(p.mode == m for p in e.points) for m in spec.space.modes}
    # aggregated: 2 layouts x 2 budgets x 2 batches, MTP 0 only (not modelled with mixed steps)
    assert modes["aggregated"] == 8
    assert e.skipped["MTP with chunked prefill (mixed steps) is not modelled"] == 8
    # pd: prefill (TP8 on 8 GPUs, TP4 on 4 or 8: 3 pools) x 2 decode layouts x 2 x 2, MTP 0 only
    # (Qwen3-30B-A3B has no MTP layers: its MTP points are left out, not invalid rows)
    assert modes["pd"] == 3 * 2 * 4
    assert e.skipped["MTP on a model without MTP layers"] == 3 * 2 * 4
    # pd+afd: 3 prefill pools x 4 splits (2A/6A x m 2/3) x 2 x 2, MTP 0 only
    assert modes["pd+afd"] == 3 * 4 * 4
    # aggregated+afd: 4 splits x 2 x 2
    assert modes["aggregated+afd"] == 16
    assert e.skipped["prefill GPUs not a multiple of the replica's 8"] > 0
    assert e.skipped["attention group as large as the AFD replica"] > 0
    assert e.skipped["MTP with an AFD decode pool is not modelled"] > 0
    keys = [p.key for p in e.points]
    assert len(set(keys)) == len(keys)
    assert keys == [p.key for p in enumerate_points(spec).points]  # stable
    other = experiment_from_dict({**TINY, "gpus": 16, "load": {**TINY["load"], "attainment": 0.95},
                                  "space": spec_space_dict(spec)})
    assert not set(keys) & {p.key for p in enumerate_points(other).points}  # a new search, new keys


def spec_space_dict(spec):
    s = spec.space
    return {"modes": list(s.modes), "replicas": [{"tp": p.tp, "ep": p.ep, "dp_attention": p.dp_attention}
                                                  for p in s.replicas],
            "prefill_gpus": list(s.prefill_gpus), "afd": {"gpus": list(s.afd.gpus),
                                                          "attention_gpus": list(s.afd.attention_gpus),
                                                          "micro_batches": list(s.afd.micro_batches)},
            "max_batch": list(s.max_batch), "token_budget": list(s.token_budget), "mtp": list(s.mtp)}


def test_pareto_front_and_best_per_mode_on_synthetic_rows():
    def row(key, mode, user, gpu, status="ok", reason=""):
        return {"key": key, "model": "m", "topology": "t", "workload": "w", "mode": mode, "status": status,
                "reason": reason, "tokens_per_s_per_user": user, "tokens_per_s_per_gpu": gpu}

    rows = [row("a", "aggregated", 10, 100), row("b", "aggregated", 20, 90), row("c", "pd", 15, 80),  # c dominated
            row("d", "pd", 30, 50), row("e", "pd", 20, 90), row("f", "pd+afd", None, None, "infeasible", "over HBM"),
            row("g", "pd+afd", None, None, "infeasible", "over HBM"), row("h", "aggregated+afd", 5, 200, "slo_unmet")]
    front = pareto_front(rows)
    assert [r["key"] for r in front] == ["a", "b", "e", "d"]  # b and e tie: both kept
    best = {r["mode"]: r for r in best_per_mode(rows)}
    assert best["aggregated"]["key"] == "a" and best["pd"]["key"] == "e"
    assert best["pd+afd"]["status"] == "infeasible" and best["pd+afd"]["reason"] == "over HBM (2 of 2 points)"
    assert best["aggregated+afd"]["status"] == "slo_unmet"  # never on the front
    assert "h" not in {r["key"] for r in front}


def test_infeasible_point_is_pruned_with_its_reason_without_simulation(tmp_path):
    spec = experiment_from_dict({**TINY, "model": "deepseek-ai/DeepSeek-V3", "space": {
        "modes": ["aggregated"], "replicas": [{"tp": 4, "ep": 4, "dp_attention": True}], "max_batch": [8]}})
    (point,) = enumerate_points(spec).points
    row = evaluate_point(spec, point, tmp_path)
    assert row["status"] == "infeasible" and row["evaluations"] == 0
    assert "GiB" in row["reason"] and "pool 'agg'" in row["reason"]
    assert not list(tmp_path.glob("*.json"))  # no step-time model was built


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny experiment run once, uninterrupted, with two local worker processes."""
    base = tmp_path_factory.mktemp("explore")
    spec = experiment_from_dict(TINY, str(base / "tiny.yaml"))
    result = explore(spec, base / "clean", workers=2, cache_dir=base / "cache")
    return base, spec, result


def test_load_search_keeps_the_largest_load_meeting_the_slos(tiny_run):
    from cosim.serving.deployment import deployment_from_dict
    from cosim.serving.run import serve
    from cosim.serving.workload import ClosedLoop, generate_requests

    base, spec, result = tiny_run
    assert len(result.rows) == 4 and result.evaluated == 4 and result.reused == 0
    for r in result.rows:
        assert r["status"] in ("ok", "slo_unmet"), r["reason"]
        if r["status"] == "ok":
            assert r["slo_attainment"] >= 0.9 and 4 <= r["concurrency"] <= 256
    # the row's failing load really misses the SLO, re-served independently
    r = next(r for r in result.rows if r["status"] == "ok" and r.get("failing_concurrency"))
    wl = spec.workloads[0]
    users = r["failing_concurrency"]
    reqs = generate_requests(wl.spec.with_arrival(ClosedLoop(users)), num_requests=max(2 * users, 16), seed=0)
    from cosim.serving.simulator import ServingOptions

    again = serve(deployment_from_dict(json.loads(r["deployment"])), reqs, slo=wl.slo, link_load=False,
                  options=ServingOptions(ramp_s=max(0.1, users / 1000)), cache_dir=base / "cache")
    from cosim.explore.evaluate import steady_attainment

    assert steady_attainment(again.run, wl.slo, users) < 0.9 and users > r["concurrency"]
    assert (base / "clean" / "results.parquet").exists()


def test_sigkill_then_resume_loses_and_duplicates_nothing(tiny_run):
    """A run killed (SIGKILL) after its first finished point resumes: the finished points are
    reused, the others evaluated once, and the table equals the uninterrupted run's."""
    base, spec, clean = tiny_run
    exp = base / "tiny.yaml"
    import yaml

    exp.write_text(yaml.safe_dump(TINY))
    out = base / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cosim.cli.main", "explore", str(exp), "-o", str(out), "--cache",
                             str(base / "cache"), "-q", "-j", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list((out / "points").glob("*.parquet"))) < 1:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(list((out / "points").glob("*.parquet")))
    assert 1 <= before < 4, before
    resumed = explore(load_experiment(exp), out, workers=1, cache_dir=base / "cache")
    assert resumed.reused == before and resumed.evaluated == 4 - before
    keys = [r["key"] for r in resumed.rows]
    assert len(keys) == len(set(keys)) == 4
    assert _stable(resumed.rows) == _stable(clean.rows)  # one worker or two, killed or not: the same rows
    assert not list((out / "points").glob(".*.tmp"))


def test_cli_explore_prints_best_per_mode(tiny_run, capsys):
    from cosim.cli.main import main

    base, _, _ = tiny_run
    exp = base / "cli.yaml"
    import yaml

    exp.write_text(yaml.safe_dump(TINY))
    assert main(["explore", str(exp), "-o", str(base / "clean"), "--cache", str(base / "cache"), "-q",
                 "--fronts"]) == 0
    text = capsys.readouterr().out
    assert "4 reused" in text and "Best deployment per mode" in text and "Pareto front" in text
    assert main(["explore", str(Path(base / "missing.yaml")), "-q"]) == 2


@pytest.fixture()
def ray_head():
    """A real Ray head on 127.0.0.1, started for the test and stopped after it. Ray resolves a
    loopback address to the machine's IP unless told to stay local
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: a single-machine cluster on the loopback)."""
    import shutil
    import socket
    import tempfile

    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    assert ray_bin, "Ray is part of the test install (pip install '.[test]')"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="cosim-ray-")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    old = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the driver too (read when ray is imported)
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                    "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        if old is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = old


def test_ray_runner_on_a_local_head_gives_the_local_runners_rows(tiny_run, ray_head):
    import ray

    base, spec, clean = tiny_run
    result = explore(spec, base / "ray", runner="ray", address=ray_head, cache_dir=base / "cache")
    assert result.evaluated == 4 and not ray.is_initialized()  # the runner disconnected
    assert _stable(result.rows) == _stable(clean.rows)


def _with_topologies(topologies, **kw):
    d = {k: v for k, v in TINY.items() if k != "topology"}
    return {**d, "topologies": topologies, **kw}


def test_topology_sweep_expands_generator_parameters():
    """``{base, sweep}`` topologies: one variant per value, embedded in the points' deployment
    documents (so the key follows the content), with the swept NIC bandwidth."""
    from cosim.serving.deployment import deployment_from_dict

    spec = experiment_from_dict(_with_topologies([
        "h200-hgx-2node", {"base": "h200-hgx-2node", "sweep": {"nic_bandwidth": ["200Gbps", "800Gbps"]}}], gpus=16))
    assert spec.topologies == ("h200-hgx-2node", "h200-hgx-2node nic_bandwidth=200Gbps",
                               "h200-hgx-2node nic_bandwidth=800Gbps")
    points = enumerate_points(spec).points
    nic = {}
    for p in points:
        topo = deployment_from_dict(p.deployment_dict()).topology
        nic[p.topology] = max(l.bandwidth_bps for l in topo.links if l.tier == "rail")
    assert nic == {"h200-hgx-2node": 400e9, "h200-hgx-2node nic_bandwidth=200Gbps": 200e9,
                   "h200-hgx-2node nic_bandwidth=800Gbps": 800e9}
    assert len({p.key for p in points}) == len(points)
    with pytest.raises(ConfigError, match="topologies\\[0\\].sweep.*nic_bandwith"):
        experiment_from_dict(_with_topologies([{"base": "h200-hgx-2node", "sweep": {"nic_bandwith": ["200Gbps"]}}]),
                             "x.yaml")
    with pytest.raises(ConfigError, match="has no generator"):
        experiment_from_dict(_with_topologies([{"base": "example-explicit", "sweep": {"nic_bandwidth": ["200Gbps"]}}]),
                             "x.yaml")
