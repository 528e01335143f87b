"""The disaggregation study: when does each level of disaggregation pay off?

Runs the study's experiments (``hgx-b200.yaml``, ``hgx-nic.yaml``, ``nvl72.yaml``,
``nvl72-micro-batches.yaml`` beside this file) with
``cosim explore`` into ``results/disaggregation/<name>/`` (resumable: a killed run continues
where it stopped), then writes this folder's ``README.md`` tables and ``img/*.png`` plots from the
result rows alone. One command regenerates everything::

    python experiments/disaggregation/study.py            # run (or resume) and write the README
    python experiments/disaggregation/study.py --tables   # only rewrite tables and plots from results

The README's hand-written text sits outside the ``<!-- study:NAME -->`` ... ``<!-- /study:NAME -->``
markers; only the text between markers is replaced.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXPERIMENTS = ("hgx-b200", "hgx-nic", "nvl72", "nvl72-micro-batches")
MODES = ("aggregated", "pd", "pd+afd", "aggregated+afd")
MODE_NAMES = {"aggregated": "aggregated", "pd": "P/D", "pd+afd": "P/D + AFD", "aggregated+afd": "aggregated + AFD"}
WORKLOADS = ("chat", "coding", "agentic-coding")


def experiment_name(stem: str) -> str:
    from cosim.explore import load_experiment

    return load_experiment(HERE / f"{stem}.yaml").name


def run_experiments(results: Path, workers: int | None) -> dict[str, float]:
    """``cosim explore`` of every experiment (resumes what a folder holds); wall time of each."""
    walls = {}
    for stem in EXPERIMENTS:
        out = results / experiment_name(stem)
        # no HTML report per experiment (its ~60 finalists' step and link figures take ~25 s each):
        # cosim report results/disaggregation/<name> writes it on demand
        cmd = [sys.executable, "-m", "cosim", "explore", str(HERE / f"{stem}.yaml"), "-o", str(out), "--no-packet",
               "--no-report"]
        if workers:
            cmd += ["-j", str(workers)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        walls[stem] = time.perf_counter() - t0
    return walls


def load_rows(results: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    from cosim.explore import load_experiment
    from cosim.explore.space import enumerate_points

    rows = {}
    for stem in EXPERIMENTS:
        spec = load_experiment(HERE / f"{stem}.yaml")
        keys = {p.key for p in enumerate_points(spec).points}  # the folder may hold points of older versions
        path = results / spec.name / "results.parquet"
        rows[stem] = [r for r in pq.read_table(path).to_pylist() if r["key"] in keys] if path.exists() else []
    return rows


def _short_model(m: str) -> str:
    return m.split("/")[-1]


def _nic(topology: str) -> str:
    """NIC bandwidth per GPU of an HGX B200 study topology ('' for others)."""
    m = re.search(r"nic_bandwidth=(\S+)", topology)
    if m:
        return m.group(1).replace("Gbps", "G")
    return "400G" if topology == "b200-hgx-16node" else ""


def _best(rows: list[dict]) -> dict | None:
    ok = [r for r in rows if r["status"] == "ok"]
    return max(ok, key=lambda r: (r["tokens_per_s_per_gpu"], r["key"])) if ok else None


def _why_not(rows: list[dict], short: bool = False) -> str:
    """Why no point of ``rows`` met the SLOs, in a few words: the p90 latencies over their
    bounds of the point closest to meeting them at the lowest load, or the most common reason
    the points could not be served."""
    if not rows:
        return "no point"
    unmet = [r for r in rows if r["status"] == "slo_unmet"]
    if unmet:
        r = max(unmet, key=lambda r: (r.get("slo_attainment") or 0.0, -(r.get("tpot_p90_ms") or 1e9), r["key"]))
        limits = {"chat": (50, 15), "coding": (100, 15), "agentic-coding": (150, 15)}.get(r["workload"], (None, None))
        ttft, tpot = r.get("ttft_p90_ms"), r.get("tpot_p90_ms")
        parts = []
        if ttft is not None and limits[0] and ttft > limits[0]:
            parts.append(f"TTFT {ttft:.0f}")
        if tpot is not None and limits[1] and tpot > limits[1]:
            parts.append(f"TPOT {tpot:.1f}")
        if not parts:
            parts = [f"attainment {r['slo_attainment']:.0%}" if r.get("slo_attainment") is not None
                     else "no request finished"]
        unit = " ms" if parts[0].startswith("T") else ""
        return ("unmet: " if short else "SLO unmet: ") + ", ".join(parts) + unit
    reasons = defaultdict(int)
    for r in rows:
        reason = r.get("reason") or r["status"]
        if "placement" in reason and "must fit" in reason:
            reason = "cannot be placed (no second rack with room)"
        elif "KV cache than a rank holds" in reason:
            reason = "a request's KV exceeds a rank's"
        elif "weights" in reason and "exceed" in reason:
            reason = "weights exceed HBM"
        else:
            reason = reason.split(";")[0][:60]
        reasons[reason] += 1
    reason, n = max(reasons.items(), key=lambda kv: kv[1])
    return f"{rows[0]['status']}: {reason}" + (f" ({n} of {len(rows)})" if len(rows) > 1 else "")


def _split(r: dict) -> str:
    split, m = r.get("label_afd_split"), r.get("label_micro_batches")
    if not split:
        return ""
    place = r.get("label_afd_placement") or ""
    return f"{split} m={m}" + (f" {place}" if place and place != "packed" else "")


def _cases(rows: dict[str, list[dict]]) -> list[tuple[tuple[str, str, str], list[dict]]]:
    """The rows of every experiment grouped by (model, topology, workload), in table order; the
    NIC sweep's variants are left out (they have their own table)."""
    groups = defaultdict(list)
    for stem in EXPERIMENTS:
        for r in rows[stem]:
            if "nic_bandwidth" not in r["topology"]:
                groups[(r["model"], r["topology"], r["workload"])].append(r)
    order = {w: i for i, w in enumerate(WORKLOADS)}
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 9)))


def headline(rows: dict[str, list[dict]]) -> str:
    """Per model x topology x workload: best tokens/s per GPU of each mode, or why none."""
    lines = ["| model | topology | workload | " + " | ".join(MODE_NAMES[m] for m in MODES) + " | best A:F split |",
             "|---|---|---|" + "---|" * len(MODES) + "---|"]
    for (model, topo, wl), rs in _cases(rows):
        cells, afd_best = [], None
        for mode in MODES:
            ms = [r for r in rs if r["mode"] == mode]
            b = _best(ms)
            if b is None:
                cells.append(_why_not(ms))
                continue
            cells.append(f"**{b['tokens_per_s_per_gpu']:.0f}** ({b['tokens_per_s_per_user']:.0f}/user, "
                         f"{b['concurrency']} users)")
            if mode.endswith("afd") and (afd_best is None or b["tokens_per_s_per_gpu"] > afd_best["tokens_per_s_per_gpu"]):
                afd_best = b
        lines.append(f"| {_short_model(model)} | {topo} | {wl} | " + " | ".join(cells) +
                     f" | {_split(afd_best) if afd_best else '-'} |")
    return "\n".join(lines)


def best_deployments(rows: dict[str, list[dict]]) -> str:
    """The winning deployment of every model x topology x workload (any mode)."""
    lines = ["| model | topology | workload | mode | deployment | tok/s/GPU | tok/s/user | users | TTFT p90 ms | TPOT p90 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, topo, wl), rs in _cases(rows):
        b = _best(rs)
        if b is None:
            lines.append(f"| {_short_model(model)} | {topo} | {wl} | none | {_why_not(rs)} | | | | | |")
            continue
        mtp = f", MTP {b['label_mtp']}" if b.get("label_mtp") not in (None, "", "0") else ""
        lines.append(f"| {_short_model(model)} | {topo} | {wl} | {MODE_NAMES[b['mode']]} | {b['label_pools']}{mtp} | "
                     f"{b['tokens_per_s_per_gpu']:.0f} | {b['tokens_per_s_per_user']:.0f} | {b['concurrency']} | "
                     f"{b['ttft_p90_ms']:.0f} | {b['tpot_p90_ms']:.1f} |")
    return "\n".join(lines)


def nic_table(rows: list[dict]) -> str:
    """How the best tokens/s per GPU of each mode moves with the NIC bandwidth (HGX): the
    deployments swept at every bandwidth (those of ``hgx-nic.yaml``; the 400G rows of
    ``hgx-b200.yaml`` with the same pools, MTP and batching limits)."""
    def same(r):
        return r["label_pools"], r.get("label_mtp"), r.get("label_token_budget"), r.get("label_max_batch")

    swept = {same(r) for r in rows if "nic_bandwidth" in r["topology"]}
    rows = [r for r in rows if same(r) in swept]
    nics = sorted({_nic(r["topology"]) for r in rows if _nic(r["topology"])}, key=lambda s: float(s.rstrip("G")))
    lines = ["| model | workload | mode | " + " | ".join(f"{n} per GPU" for n in nics) + " |",
             "|---|---|---|" + "---|" * len(nics)]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["workload"], r["mode"], _nic(r["topology"]))].append(r)
    order = {w: i for i, w in enumerate(WORKLOADS)}
    for model in sorted({r["model"] for r in rows}):
        for wl in sorted({r["workload"] for r in rows}, key=lambda w: order.get(w, 9)):
            for mode in MODES:
                cells = []
                for n in nics:
                    rs = groups.get((model, wl, mode, n), [])
                    b = _best(rs)
                    if b:
                        cells.append(f"**{b['tokens_per_s_per_gpu']:.0f}** (TTFT p90 {b['ttft_p90_ms']:.0f}, "
                                     f"TPOT p90 {b['tpot_p90_ms']:.1f} ms)")
                    elif rs:
                        low = min(rs, key=lambda r: (r.get("tpot_p90_ms") or 1e9))
                        cells.append(f"unmet (TTFT p90 {low.get('ttft_p90_ms') or float('nan'):.0f}, "
                                     f"TPOT p90 {low.get('tpot_p90_ms') or float('nan'):.1f} ms)"
                                     if low.get("ttft_p90_ms") is not None else _why_not(rs, short=True))
                    else:
                        cells.append("-")
                if any(c != "-" for c in cells):
                    lines.append(f"| {_short_model(model)} | {wl} | {MODE_NAMES[mode]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def placement_table(rows: list[dict]) -> str:
    """NVL72: best AFD points with A and F in one rack (NVLink) vs in different racks (RDMA)."""
    lines = ["| model | workload | mode | A:F split | NVLink (one rack) tok/s/GPU | RDMA (two racks) tok/s/GPU | "
             "best TPOT p50 NVLink / RDMA |", "|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in rows:
        if r["mode"].endswith("afd") and r.get("label_afd_placement"):
            groups[(r["model"], r["workload"], r["mode"], r["label_afd_split"])].append(r)
    order = {w: i for i, w in enumerate(WORKLOADS)}
    for (model, wl, mode, split), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9),
                                                                                kv[0][2], kv[0][3])):
        cell = {}
        for place in ("nvlink", "rdma"):
            ps = [r for r in rs if r["label_afd_placement"] == place]
            b = _best(ps)
            cell[place] = f"**{b['tokens_per_s_per_gpu']:.0f}**" if b else (_why_not(ps, short=True) if ps else "-")
            tpot = [r.get("tpot_p50_ms") for r in ps if r.get("tpot_p50_ms") is not None]
            cell[place + "_tpot"] = f"{min(tpot):.1f}" if tpot else "-"
        lines.append(f"| {_short_model(model)} | {wl} | {MODE_NAMES[mode]} | {split} | {cell['nvlink']} | "
                     f"{cell['rdma']} | {cell['nvlink_tpot']} / {cell['rdma_tpot']} ms |")
    return "\n".join(lines)


def micro_batch_table(rows: list[dict]) -> str:
    """NVL72, A and F in one rack: best P/D + AFD point of each split with two and with three
    micro-batches (tok/s/GPU, or why none meets the SLOs) and the lowest TPOT p50 of each."""
    counts_m = sorted({r.get("label_micro_batches") for r in rows if r.get("label_micro_batches")})
    lines = ["| model | workload | A:F split | " + " | ".join(f"m={m} tok/s/GPU" for m in counts_m) + " | best TPOT p50 "
             + " / ".join(f"m={m}" for m in counts_m) + " |", "|---|---|---|" + "---|" * (len(counts_m) + 1)]
    groups = defaultdict(list)
    for r in rows:
        if r["mode"] == "pd+afd" and r.get("label_afd_placement") == "nvlink":
            groups[(r["model"], r["workload"], r["label_afd_split"])].append(r)
    order = {w: i for i, w in enumerate(WORKLOADS)}
    for (model, wl, split), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9), kv[0][2])):
        cells, tpots = [], []
        for m in counts_m:
            ms = [r for r in rs if r.get("label_micro_batches") == m]
            b = _best(ms)
            cells.append(f"**{b['tokens_per_s_per_gpu']:.0f}**" if b else (_why_not(ms, short=True) if ms else "-"))
            t = [r["tpot_p50_ms"] for r in ms if r.get("tpot_p50_ms") is not None]
            tpots.append(f"{min(t):.1f}" if t else "-")
        lines.append(f"| {_short_model(model)} | {wl} | {split} | " + " | ".join(cells) + f" | {' / '.join(tpots)} ms |")
    return "\n".join(lines)


def counts(rows: dict[str, list[dict]], walls: dict) -> str:
    lines = ["| experiment | points | meet the SLOs | SLO unmet | infeasible | invalid | serving runs | "
             "sum of point walls s | points/s (one worker) | last run wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for stem in EXPERIMENTS:
        rs = rows[stem]
        by = defaultdict(int)
        for r in rs:
            by[r["status"]] += 1
        wall = sum(r.get("wall_s") or 0.0 for r in rs)
        run = walls.get(stem)
        lines.append(f"| {stem}.yaml | {len(rs)} | {by['ok']} | {by['slo_unmet']} | {by['infeasible']} | "
                     f"{by['invalid']} | {sum(r.get('evaluations') or 0 for r in rs)} | {wall:.0f} | "
                     f"{len(rs) / wall if wall else 0:.2f} | {f'{run:.0f}' if run else '-'} |")
    return "\n".join(lines)


def plots(rows: dict[str, list[dict]], img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    written = []
    # 1. best tokens/s per GPU per mode, per workload; bars grouped by model x topology
    allrows = [r for stem in EXPERIMENTS for r in rows[stem] if "nic_bandwidth" not in r["topology"]]
    combos = sorted({(r["model"], r["topology"]) for r in allrows})
    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(5.2 * len(WORKLOADS), 4.6), sharey=False)
    for ax, wl in zip(axes, WORKLOADS):
        width = 0.8 / max(1, len(MODES))
        for j, mode in enumerate(MODES):
            vals = []
            for model, topo in combos:
                b = _best([r for r in allrows if r["model"] == model and r["topology"] == topo and
                           r["workload"] == wl and r["mode"] == mode])
                vals.append(b["tokens_per_s_per_gpu"] if b else 0.0)
            ax.bar([i + j * width for i in range(len(combos))], vals, width, label=MODE_NAMES[mode])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(combos))])
        ax.set_xticklabels([f"{_short_model(m)[:14]}\n{t.replace('b200-hgx-16node ', '').replace('nic_bandwidth=', '')}"
                            for m, t in combos], fontsize=6.5, rotation=60, ha="right")
        ax.set_title(f"{wl}: best tokens/s per GPU under the SLOs")
        ax.set_ylabel("tokens/s per GPU (0 = no point meets the SLOs)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = img / "best-per-mode.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)
    # 2. Pareto fronts (tokens/s per user vs per GPU) per model x workload, HGX 400G and NVL72
    fig, axes = plt.subplots(2, len(WORKLOADS), figsize=(5.2 * len(WORKLOADS), 8.4))
    models = sorted({r["model"] for r in allrows})
    for i, model in enumerate(models[:2]):
        for k, wl in enumerate(WORKLOADS):
            ax = axes[i][k]
            for topo in sorted({r["topology"] for r in allrows}):
                if "nic_bandwidth" in topo and "400" not in topo:
                    continue
                for mode, marker in zip(MODES, "osD^"):
                    ok = [r for r in allrows if r["model"] == model and r["workload"] == wl and r["topology"] == topo
                          and r["mode"] == mode and r["status"] == "ok"]
                    if ok:
                        ax.scatter([r["tokens_per_s_per_user"] for r in ok], [r["tokens_per_s_per_gpu"] for r in ok],
                                   marker=marker, s=22, alpha=0.75,
                                   label=f"{MODE_NAMES[mode]}, {'NVL72' if 'nvl72' in topo else 'HGX 400G'}")
            ax.set_title(f"{_short_model(model)}, {wl}", fontsize=9)
            ax.set_xlabel("tokens/s per user")
            ax.set_ylabel("tokens/s per GPU")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, "no point meets the SLOs", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path = img / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)
    return written


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- study:{name} -->", f"<!-- /study:{name} -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    block = f"{start}\n{body}\n{end}"
    if not pattern.search(text):
        raise SystemExit(f"{HERE / 'README.md'}: marker {start} missing")
    return pattern.sub(lambda _: block, text)


def write_readme(rows: dict[str, list[dict]], walls: dict) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    text = replace_block(text, "counts", counts(rows, walls))
    text = replace_block(text, "headline", headline(rows))
    text = replace_block(text, "best", best_deployments(rows))
    text = replace_block(text, "nic", nic_table(rows["hgx-b200"] + rows["hgx-nic"]))
    text = replace_block(text, "placement", placement_table(rows["nvl72"]))
    text = replace_block(text, "micro-batches", micro_batch_table(
        [r for r in rows["nvl72"] if "Qwen" in r["model"]] + rows["nvl72-micro-batches"]))
    readme.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "disaggregation")
    ap.add_argument("--tables", action="store_true", help="only rewrite the README tables and plots")
    ap.add_argument("-j", "--workers", type=int, default=None)
    args = ap.parse_args()
    walls_path = args.results / "walls.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    if not args.tables:
        walls = run_experiments(args.results, args.workers)
        walls_path.write_text(json.dumps(walls, indent=1))
    rows = load_rows(args.results)
    plots(rows, HERE / "img")
    write_readme(rows, walls)
    print(f"wrote {HERE / 'README.md'} and {HERE / 'img'}")


if __name__ == "__main__":
    main()
