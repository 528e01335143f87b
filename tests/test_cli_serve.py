"""cosim serve: a deployment YAML and a workload preset to latencies, throughput and files."""

import json

import pyarrow.parquet as pq

from cosim.cli.main import main

DEPLOYMENT = """
model: Qwen/Qwen3-30B-A3B
topology: h200-hgx-2node
pools:
  - name: prefill
    role: prefill
    parallel: {tp: 8, ep: 8, dp_attention: true}
    batching: {policy: prefill_only, token_budget: 4096, max_batch: 4}
  - name: decode
    role: decode
    parallel: {tp: 8, ep: 8, dp_attention: true}
    batching: {policy: decode_only, max_batch: 8}
"""


def test_serve_pd_writes_parquet_and_json(tmp_path, capsys):
    dep = tmp_path / "pd.yaml"
    dep.write_text(DEPLOYMENT)
    out, js = tmp_path / "req.parquet", tmp_path / "run.json"
    rc = main(["serve", str(dep), "--workload", "chat", "--concurrency", "16", "-n", "64", "--cache",
               str(tmp_path / "cache"), "-o", str(out), "--json", str(js), "-q"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "TTFT" in text and "KV transfer" in text and "disaggregated" in text
    table = pq.read_table(out)
    assert table.num_rows == 64 and (table.column("kv_transfer_s").to_numpy() > 0).all()
    data = json.loads(js.read_text())
    s = data["summary"]
    assert data["feasible"] and s["finished"] == 64
    assert s["ttft"]["p50_s"] <= s["ttft"]["p99_s"]
    # Little's law on the closed loop of 16 users (short run: within 10 %)
    assert abs(s["mean_concurrency"] - 16) / 16 < 0.1
    # second run reuses the saved step-time models
    assert main(["serve", str(dep), "--workload", "chat", "--concurrency", "16", "-n", "16", "--cache",
                 str(tmp_path / "cache"), "--json", str(js), "-q"]) == 0
    assert all(v["source"] == "loaded" for v in json.loads(js.read_text())["step_models"].values())


def test_serve_errors_and_infeasible(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOYMENT.replace("replicas", "replica").replace("role: decode", "role: decoder"))
    assert main(["serve", str(bad), "-q"]) == 2
    assert "pools[1].role" in capsys.readouterr().out
    big = tmp_path / "big.yaml"
    big.write_text("model: deepseek-ai/DeepSeek-V3\ntopology: h200-hgx-node\npools:\n  - name: agg\n    role: mixed\n"
                   "    parallel: {tp: 1}\n")
    assert main(["serve", str(big), "-q", "--cache", str(tmp_path / "c")]) == 1
    assert "infeasible" in capsys.readouterr().out


def test_step_traffic_of_the_run_stays_on_the_replicas_gpus(tmp_path):
    """Serving estimates each replica's step traffic (dispatch/combine) on its own GPUs' links:
    a replica on node 1 of two puts none of it on node 0."""
    from cosim.serving.deployment import deployment_from_dict
    from cosim.serving.run import serve
    from cosim.serving.workload import ClosedLoop, generate_requests, preset

    dep = deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-2node", "pools": [
        {"name": "agg", "role": "mixed", "parallel": {"tp": 8, "ep": 8, "dp_attention": True}, "gpus": "8-15",
         "batching": {"policy": "chunked_prefill", "token_budget": 1024, "max_batch": 8}}]})
    wl = preset("chat").with_arrival(ClosedLoop(16))
    res = serve(dep, generate_requests(wl, num_requests=32), slo=wl.slo, cache_dir=tmp_path)
    topo = dep.topology
    used = {topo.describe_link(int(d)) for d in (res.step_link_tx_bytes > 0).nonzero()[0]}
    assert used and all("n1." in u for u in used)
    assert res.run.link_tx_bytes is None  # aggregated: no KV transfers


def test_aggregated_afd_serves_prefill_chunks_on_the_attention_group(tmp_path):
    """Aggregated + AFD: mixed steps (prefill chunks with the decodes) on the attention group of
    4 GPUs, the experts on 4 FFN GPUs; every request finishes, the closed loop keeps its users
    (Little's law), and the run's step traffic crosses between the two groups on every GPU's link."""
    from cosim.serving.deployment import deployment_from_dict
    from cosim.serving.run import serve
    from cosim.serving.workload import ClosedLoop, generate_requests, preset

    dep = deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-node", "pools": [
        {"name": "agg", "role": "mixed", "afd": {"attention_gpus": 4, "ffn_gpus": 4, "micro_batches": 2},
         "batching": {"policy": "chunked_prefill", "token_budget": 512, "max_batch": 16}}]})
    assert dep.mode == "aggregated+afd"
    wl = preset("chat").with_arrival(ClosedLoop(16))
    res = serve(dep, generate_requests(wl, num_requests=64), slo=wl.slo, cache_dir=tmp_path)
    assert res.feasible and res.summary.finished == 64
    assert abs(res.summary.mean_concurrency - 16) / 16 < 0.1
    # prefill ran in mixed steps of the AFD model (prompts are longer than one step's budget)
    assert res.step_models["agg"]["queries"] > 64 and res.summary.ttft.p50_s > res.summary.tpot.p50_s
    topo = dep.topology
    used = {topo.describe_link(int(d)) for d in (res.step_link_tx_bytes > 0).nonzero()[0]}
    assert {f"gpu{g} -> nvswitch" for g in range(8)} <= used


def test_a_replica_placed_differently_gets_its_own_step_model(tmp_path):
    """Two decode-side replicas of 8 GPUs: one inside node 0, one split over nodes 1 and 2 (its
    MoE all-to-all crosses the NICs). The split one gets its own step-time model, and its steps
    are slower; a third replica inside node 3 shares replica 0's."""
    from cosim.serving.deployment import deployment_from_dict
    from cosim.serving.run import serve
    from cosim.serving.workload import ClosedLoop, generate_requests, preset

    dep = deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-4node", "pools": [
        {"name": "agg", "role": "mixed", "replicas": 3, "parallel": {"tp": 8, "ep": 8, "dp_attention": True},
         "gpus": "0-7,8-11,16-19,24-31", "batching": {"policy": "chunked_prefill", "token_budget": 512,
                                                       "max_batch": 8}}]})
    wl = preset("chat").with_arrival(ClosedLoop(24))
    res = serve(dep, generate_requests(wl, num_requests=48), slo=wl.slo, cache_dir=tmp_path, link_load=False)
    assert set(res.step_models) == {"agg", "agg[replica 1]"} and res.summary.finished == 48
    from cosim.engine.step_model import StepTimeModel
    from cosim.kernels import KernelTables

    kernels = KernelTables.load(dep.system, framework=dep.framework)
    inside = StepTimeModel.load(res.step_models["agg"]["path"], dep.step_spec(dep.pools[0], 0), kernels,
                                dep.topology)
    split = StepTimeModel.load(res.step_models["agg[replica 1]"]["path"], dep.step_spec(dep.pools[0], 1), kernels,
                               dep.topology)
    assert split.step_time(8, 2048).seconds > 1.1 * inside.step_time(8, 2048).seconds  # 8.4 against 6.9 ms


def test_exact_steps_agree_with_the_step_model(tmp_path):
    """``steps='exact'`` simulates every distinct step; the interpolated step-time model serves
    the same run to within 1 % (P/D, closed loop of 16 chat users)."""
    from cosim.serving.deployment import deployment_from_dict
    from cosim.serving.run import serve
    from cosim.serving.workload import ClosedLoop, generate_requests, preset
    import yaml

    dep = deployment_from_dict(yaml.safe_load(DEPLOYMENT))
    wl = preset("chat").with_arrival(ClosedLoop(16))
    reqs = generate_requests(wl, num_requests=48)
    model = serve(dep, reqs, slo=wl.slo, cache_dir=tmp_path, link_load=False)
    exact = serve(dep, reqs, slo=wl.slo, steps="exact", link_load=False)
    assert {v["source"] for v in exact.step_models.values()} == {"exact"}
    assert all(v["simulations"] >= 1 for v in exact.step_models.values())
    for name in ("ttft", "tpot"):
        a, b = getattr(model.summary, name).mean_s, getattr(exact.summary, name).mean_s
        assert abs(a / b - 1) < 0.01, (name, a, b)


def test_serve_routing_options_group_requests_by_domain(tmp_path, capsys):
    """``cosim serve --routing ... --placement domain --grouping --router domain --domains 4``:
    the requests carry domains, the run groups them and reports the purity (JSON and Parquet);
    bad routing options are clean errors."""
    dep = tmp_path / "agg.yaml"
    dep.write_text("model: Qwen/Qwen3-30B-A3B\ntopology: h200-hgx-2node\npools:\n  - name: agg\n    role: mixed\n"
                   "    parallel: {tp: 16, ep: 16, dp_attention: true}\n"
                   "    batching: {policy: chunked_prefill, token_budget: 1024, max_batch: 8}\n")
    js, out = tmp_path / "run.json", tmp_path / "req.parquet"
    base = ["serve", str(dep), "-w", "chat", "--concurrency", "32", "-n", "48", "--steps", "exact", "-q"]
    rc = main(base + ["--routing", "domain_mixture:domains=4,overlap=0.3", "--placement", "domain", "--grouping",
                      "--router", "domain", "--domains", "4", "--json", str(js), "-o", str(out)])
    assert rc == 0
    assert "domain grouping, pool agg" in capsys.readouterr().out
    data = json.loads(js.read_text())
    assert data["grouping"]["agg"]["measured"] > 0.9 and data["grouping_purity"] > 0.9
    table = pq.read_table(out)
    assert set(table.column("domain").to_numpy()) == {0, 1, 2, 3} and table.column("decode_home").to_numpy().mean() > 0.9
    for bad, msg in ((["--placement", "domain"], "need --routing"), (["--domains", "x"], "--domains"),
                     (["--routing", "domain_mixture", "--grouping-purity", "2"], "--grouping-purity"),
                     (["--routing", "magic"], "unknown routing model"), (["--router", "magic"], "invalid choice")):
        assert main(base + bad) == 2, bad
        cap = capsys.readouterr()
        assert msg in cap.out + cap.err, bad
