"""Static HTML report pages: one ``index.html`` and its PNG figures in one folder.

A :class:`Page` collects headings, text, tables (:class:`~cosim.report.tables.TableData`, the
same rows the terminal prints) and figures (:mod:`cosim.report.plots`) and writes them: every
figure to a temporary name renamed into place, the page last (a reader never finds a page whose
images are not there yet). The page needs nothing but its folder: no script, no style sheet or
font from elsewhere; all user text (names, reasons, labels) is escaped.

Four pages, built from the same sections:

- :func:`write_experiment_report`: an exploration's result folder (``cosim report OUT``): Pareto
  fronts, the best deployment per mode with the reasons of the modes that have none, the
  finalists' flow/packet re-check, and per finalist its step breakdown per pool, the busy/idle
  time of AFD groups, a heat map of link utilization over the step and the hottest links. It
  reads ``results.parquet``, ``experiment.json`` and ``finalists/*.json`` only: it never
  simulates.
- :func:`write_step_report` (``cosim step --report``), :func:`write_net_report` (``cosim net
  --report``), :func:`write_serving_report` (``cosim serve --report``): one run's page.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from cosim.engine.summary import LinkSeries, network_link_series, step_link_series, step_summary
from cosim.errors import CosimError
from cosim.io_atomic import atomic_write_text
from cosim.report import plots
from cosim.report.links import hottest_links_data, series_links_data
from cosim.report.tables import TableData, table_data
from cosim.units import format_bytes, format_time

#: Links drawn in a heat map (the most bytes first).
HEATMAP_LINKS = 16

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; line-height: 1.35; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0 1.4em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } p.meta { color: #555; font-size: 0.9em; }
nav ul { list-style: none; padding: 0; font-size: 0.9em; } nav li { display: inline; margin-right: 1.4em; }
"""


class ReportError(CosimError):
    """A report cannot be written (no results in the folder, an unusable output folder)."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "figure"


class Page:
    """An HTML page under construction in ``folder`` (module docstring)."""

    def __init__(self, folder: str | Path, title: str):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ReportError(f"{self.folder}: exists and is not a folder; expected the report folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"{self.folder}: cannot create the report folder ({exc.strerror or exc})") from None
        self.title = title
        self._body: list[str] = []
        self._sections: list[tuple[str, str]] = []
        self.images: list[str] = []

    def h2(self, text: str) -> None:
        anchor = f"s{len(self._sections) + 1}"
        self._sections.append((anchor, text))
        self._body.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')

    def h3(self, text: str) -> None:
        self._body.append(f"<h3>{html.escape(text)}</h3>")

    def p(self, text: str, meta: bool = False) -> None:
        cls = ' class="meta"' if meta else ""
        self._body.append(f"<p{cls}>{html.escape(text)}</p>")

    def items(self, lines: Iterable[str]) -> None:
        self._body.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")

    def table(self, data: TableData | None) -> None:
        if data is None or not data.rows:
            return
        head = "".join(f"<th>{html.escape(c)}</th>" for c in data.columns)
        num = ' class="num"'
        body = "".join("<tr>" + "".join(f"<td{'' if col in data.left else num}>{html.escape(cell)}</td>"
                                        for col, cell in zip(data.columns, row)) + "</tr>" for row in data.rows)
        self._body.append(f"<table><caption>{html.escape(data.title)}</caption><thead><tr>{head}</tr></thead>"
                          f"<tbody>{body}</tbody></table>")

    def figure(self, name: str, draw: Callable[[Path], Path], caption: str) -> Path:
        """Draw a figure with ``draw(path)`` (a :mod:`cosim.report.plots` function) and show it."""
        file = f"fig-{len(self.images) + 1:02d}-{_slug(name)}.png"
        path = draw(self.folder / file)
        self.images.append(file)
        self._body.append(f'<figure><img src="{html.escape(file)}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return path

    def render(self) -> str:
        nav = ""
        if len(self._sections) > 2:
            nav = "<nav><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in self._sections) \
                + "</ul></nav>"
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n{nav}\n" + "\n".join(self._body) + "\n</body></html>\n")

    def write(self) -> Path:
        """Write ``index.html`` (atomically, after every figure) and remove figures of an earlier
        page in the folder that this one no longer shows; return its path."""
        path = atomic_write_text(self.folder / "index.html", self.render())
        keep = set(self.images)
        for old in self.folder.glob("fig-*.png"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return path


# Sections shared by the pages ------------------------------------------------------------------

def _by_total(dicts: Iterable[dict[str, float]]) -> list[str]:
    total: Counter = Counter()
    for d in dicts:
        total.update({k: float(v) for k, v in d.items()})
    return [k for k, _ in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]


OTHER = "other (waiting, not communicating)"


def step_breakdown_bars(steps: dict[str, dict]) -> tuple[list[tuple[str, dict[str, float]]], dict[str, str]]:
    """Per step summary (:func:`~cosim.engine.summary.step_summary`): compute by op class and
    exposed communication by collective on its critical rank, and the rest of the step time."""
    compute = _by_total(s["compute_by_class_s"] for s in steps.values())
    comm = _by_total(s["exposed_comm_by_collective_s"] for s in steps.values())
    bars = []
    for label, s in steps.items():
        parts = {f"compute: {k}": v for k, v in s["compute_by_class_s"].items()}
        parts.update({f"exposed: {k}": v for k, v in s["exposed_comm_by_collective_s"].items()})
        rest = s["step_time_s"] - sum(parts.values())
        if rest > 0.01 * s["step_time_s"]:
            parts[OTHER] = rest
        bars.append((label, parts))
    colours = plots.segment_colours([f"compute: {k}" for k in compute], [f"exposed: {k}" for k in comm], [OTHER])
    return bars, colours


def _step_table(steps: dict[str, dict], extra: dict[str, list[str]] | None = None) -> TableData:
    rows = []
    for label, s in steps.items():
        rows.append((label, s["layout"], format_time(s["step_time_s"]), f"{s['tokens_per_step']:,}",
                     f"{s['tokens_per_s_per_gpu']:,.1f}", f"{s['overlap_fraction']:.0%}", str(s["critical_rank"]),
                     *((extra or {}).get(label, []))))
    return table_data("Steps", ("step", "layout", "step time", "tokens", "tok/s/GPU", "comm hidden", "critical rank",
                                *(["flow", "packet", "packet vs flow"] if extra else [])), rows,
                      left=("step", "layout"))


def add_step_sections(page: Page, steps: dict[str, dict], links: dict[str, LinkSeries], *, name: str,
                      extra: dict[str, list[str]] | None = None, top_links: int = 10) -> None:
    """The breakdown of one or more steps (bars, one per step), the busy/idle time of their
    groups when a step has several (AFD), and per step its link heat map and hottest links."""
    page.table(_step_table(steps, extra))
    bars, colours = step_breakdown_bars(steps)
    page.figure(f"{name}-breakdown", lambda p: plots.stacked_bars(bars, colours, p, title="Step time on the "
                                                                 "critical rank"),
                "Step breakdown: compute by op class and exposed communication by collective on the critical "
                "(slowest) rank; the rest is time the rank waits without communicating")
    groups = [(f"{label}: {g} ({v['gpus']} GPUs)", {"busy": v["busy_s"], "idle (bubbles)": v["idle_s"]})
              for label, s in steps.items() if len(s.get("groups", {})) > 1 for g, v in s["groups"].items()]
    if groups:
        colours = {"busy": "#1f77b4", "idle (bubbles)": "#c7c7c7"}
        page.figure(f"{name}-groups", lambda p: plots.stacked_bars(groups, colours, p, title="AFD groups: busy and "
                                                                   "idle time (slowest rank of each)"),
                    "Attention and FFN groups: busy and idle time of each group's slowest rank over the step")
    for label, series in links.items():
        if not series.names:
            page.p(f"{label}: no link carried traffic.", meta=True)
            continue
        add_link_sections(page, series, name=f"{name}-{label.split(' (')[0]}", label=label, top=top_links)


def add_link_sections(page: Page, series: LinkSeries, *, name: str, label: str, top: int = 10) -> None:
    """A heat map of link utilization (links x time) and the hottest-links table."""
    n = min(HEATMAP_LINKS, len(series.names))
    page.figure(f"{name}-links", lambda p: plots.link_heatmap(series, p, title=f"{label}: link utilization over "
                                                              f"time ({n} of {len(series.names)} links)", top=n),
                f"{label}: utilization of the {n} busiest links (highest mean utilization) over time (bins of "
                f"{format_time(series.bin_s)}); {len(series.names)} directed links carried traffic")
    page.table(series_links_data(series, top, f"{label}: hottest links"))


# Experiment ------------------------------------------------------------------------------------

def _read_results(root: Path) -> tuple[list[dict], dict, list[dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = root / "results.parquet"
    if not parquet.is_file():
        raise ReportError(f"{root}: no results.parquet; expected the result folder of a cosim explore run")
    try:
        rows = pq.read_table(parquet).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{parquet}: unreadable ({exc})") from None
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    exp_path = root / "experiment.json"
    experiment = json.loads(exp_path.read_text()) if exp_path.is_file() else {}
    finalists = []
    for path in sorted((root / "finalists").glob("*.json")):
        try:
            finalists.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{path}: unreadable finalist record ({exc})") from None
    return rows, experiment, finalists


def _fmt(v, spec: str = ",.1f") -> str:
    return "-" if v is None else format(v, spec)


def write_experiment_report(results_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """The report of an exploration's result folder (module docstring), in ``out_dir`` (default
    ``RESULTS_DIR/report``); returns the path of its ``index.html``."""
    from cosim.explore.analysis import GROUP, best_per_mode, pareto_fronts
    from cosim.report.explore import best_data, front_data, group_title, reasons_data, recheck_data

    root = Path(results_dir)
    rows, experiment, finalists = _read_results(root)
    name = experiment.get("name") or root.name
    status = Counter(r.get("status") for r in rows)
    skipped = experiment.get("skipped", {})
    page = Page(Path(out_dir) if out_dir is not None else root / "report",
                f"Experiment {name}: {len(rows)} design points, {status.get('ok', 0)} meeting the SLOs")
    page.p(f"{len(rows)} points: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items(), key=lambda kv: str(kv[0])))
           + f"; {sum(skipped.values())} combinations left out; {len(finalists)} finalists examined. "
           f"Experiment file: {experiment.get('source', '-')}; results: {root}.", meta=True)
    if skipped:
        page.items(f"left out: {reason} ({n})" for reason, n in sorted(skipped.items()))

    best = best_per_mode(rows)
    page.h2("Best deployment per mode")
    page.p("Per model, topology, workload and mode: the deployment with the most tokens/s per GPU whose SLO "
           "attainment reaches the target at its largest load; when none does, the best of those that miss the SLOs "
           "(slo_unmet), or why no point of the mode was feasible.")
    page.table(best_data(best))
    page.table(reasons_data(rows))

    fronts = pareto_fronts(rows)
    page.h2("Pareto fronts")
    for i, (group, front) in enumerate(fronts.items()):
        members = [r for r in rows if tuple(r[k] for k in GROUP) == group and r.get("status") == "ok"
                   and r.get("tokens_per_s_per_user") is not None and r.get("tokens_per_s_per_gpu") is not None]
        page.h3(group_title(group))
        if not members:
            page.p("No point meets the SLOs: no front.", meta=True)
            continue
        page.figure(f"pareto-{i}", lambda p, m=members, f=front, g=group: plots.pareto_plot(
            m, f, p, title=f"Pareto front: {group_title(g)}"),
                    f"{group_title(group)}: tokens/s per GPU against tokens/s per user of the {len(members)} points "
                    f"meeting the SLOs, by mode; the line joins the {len(front)} points no other beats on both")
        page.table(front_data(group, front))

    page.h2("Finalists")
    if not finalists:
        page.p("No finalist records in this folder (cosim explore --no-finalists, or no point meets the SLOs).",
               meta=True)
        return page.write()
    on_front = {r["key"] for f in fronts.values() for r in f}
    best_of = {r["key"]: r["mode"] for r in best if r.get("status") == "ok"}
    finalists.sort(key=lambda f: (f["model"], f["topology"], f["workload"], f["mode"], -f["tokens_per_s_per_gpu"],
                                  f["key"]))
    page.p("The points of the Pareto fronts and the best point of every mode, served again at their load; each pool's "
           "representative step (the mean batch of its busiest rank) simulated on the flow backend (what the "
           "exploration used) and on the packet backend (ns-3).")
    labels, flow, packet = [], [], []
    for f in finalists:
        for pool, e in f["pools"].items():
            labels.append(f"{f['mode']}: {f['pools_label']} / {pool}")
            flow.append(e["flow_step_s"] * 1e3)
            packet.append(None if e.get("packet_step_s") is None else e["packet_step_s"] * 1e3)
    page.figure("recheck", lambda p: plots.paired_bars(labels, {"flow backend": flow, "packet backend": packet}, p,
                                                       title="Representative steps: flow vs packet backend",
                                                       unit="step time (ms)"),
                "Step time of each finalist pool's representative step on both backends")
    page.table(recheck_data(finalists))
    for i, f in enumerate(finalists):
        why = "; ".join(x for x in (f"best {best_of[f['key']]}" if f["key"] in best_of else "",
                                    "on the Pareto front" if f["key"] in on_front else "") if x)
        page.h3(f"{f['mode']}: {f['pools_label']}")
        page.p(f"{group_title((f['model'], f['topology'], f['workload']))}; {why or 'finalist'}; {f['concurrency']} "
               f"users, {_fmt(f.get('tokens_per_s_per_gpu'))} tok/s/GPU, {_fmt(f.get('tokens_per_s_per_user'))} "
               f"tok/s/user; key {f['key']}", meta=True)
        steps, links, extra = {}, {}, {}
        for pool, e in f["pools"].items():
            chunks = "+".join(str(n) for _, n in e["chunks"])
            label = f"{pool} ({e['decode_tokens']} decode, context {e['context']}" + \
                (f", chunks {chunks})" if chunks else ")")
            steps[label] = e["summary"]
            links[label] = LinkSeries.from_dict(e["links"])
            diff = e.get("packet_vs_flow")
            extra[label] = [format_time(e["flow_step_s"]),
                            "-" if e.get("packet_step_s") is None else format_time(e["packet_step_s"]),
                            "-" if diff is None else f"{diff:+.2%}"]
        add_step_sections(page, steps, links, name=f"finalist-{i + 1}", extra=extra)
    return page.write()


# One run's pages -------------------------------------------------------------------------------

def write_step_report(result, out_dir: str | Path, description: str = "", top_links: int = 10) -> Path:
    """The page of one simulated step (:class:`cosim.engine.step.StepResult`)."""
    summary = step_summary(result, top_links)
    page = Page(out_dir, f"Step: {format_time(result.step_time_s)}, {result.tokens_per_s_per_gpu:,.1f} tokens/s "
                         f"per GPU ({result.backend} backend)")
    if description:
        page.p(description, meta=True)
    mem = summary["memory"]
    if mem:
        page.p(f"memory per GPU: weights {format_bytes(mem['weight_bytes'])} + KV cache "
               f"{format_bytes(mem['kv_cache_bytes'])} + activations {format_bytes(mem['activation_bytes'])} = "
               f"{format_bytes(mem['total_bytes'])}" + ("" if mem["capacity_bytes"] is None else
                                                        f" of {format_bytes(mem['capacity_bytes'])} HBM"))
    page.p("compute durations: " + ", ".join(f"{n} {k}" for k, n in sorted(summary["duration_sources"].items()))
           + f"; {summary['network_simulations']} network simulations", meta=True)
    page.h2("Breakdown")
    add_step_sections(page, {"step": summary}, {}, name="step")
    moe = summary.get("moe_traffic")
    if moe:
        page.h2("MoE token traffic")
        rows = [(op, f"{o['layers']}", format_bytes(o["intra_bytes"]), format_bytes(o["inter_bytes"]),
                 f"{o['inter_fraction']:.1%}") for op, o in moe["by_op"].items()]
        page.table(table_data("Dispatch / combine bytes inside and across nodes (all MoE layers)",
                              ("operation", "layers", "inside a node", "across nodes", "share across"), rows,
                              left=("operation",)))
        page.p(f"routed-expert straggler factor {moe['straggler_factor']:.3f} (max / mean expert time of the ranks, "
               f"mean over layers); slowest rank {moe['slowest_rank']} in {moe['slowest_rank_layers']} layers",
               meta=True)
        page.figure("step-moe", lambda p: plots.moe_traffic_plot(moe["per_layer"], moe["rank_expert_s"], p,
                                                                 title="MoE bytes per layer",
                                                                 rank_expert_max_s=moe["rank_expert_max_s"]),
                    "Left: each MoE layer's dispatch + combine bytes that stay inside a node and that cross nodes. "
                    "Right: each rank's routed-expert time per layer, the mean over layers (bars, its expert load; "
                    "dashed: the mean of the ranks) and its largest layer (ticks)")
    page.h2("Links")
    series = step_link_series(result, top=top_links)
    if series.names:
        add_link_sections(page, series, name="step", label="step", top=top_links)
    else:
        page.p("No link carried traffic.", meta=True)
    return page.write()


def write_net_report(result, out_dir: str | Path, description: str = "", top_links: int = 10) -> Path:
    """The page of one network simulation (:class:`cosim.network.results.NetworkResult`): the
    hottest links and the utilization of the busiest links over time."""
    page = Page(out_dir, f"Network run: completion {format_time(result.completion_time_s)} "
                         f"({result.backend} backend, {result.topology.name})")
    if description:
        page.p(description, meta=True)
    page.p(f"{len(result.flows)} flows, "
           f"{format_bytes(float(np.sum(result.links.tx_bytes)))} on the wire over all hops; "
           f"simulated in {result.wall_s:.3g} s", meta=True)
    page.table(hottest_links_data(result, top_links))
    series = network_link_series(result, top_links)
    if series.names:
        add_link_sections(page, series, name="net", label=result.topology.name, top=top_links)
    return page.write()


def write_serving_report(result, out_dir: str | Path, slo=None, description: str = "", top_links: int = 10) -> Path:
    """The page of one serving run (:class:`cosim.serving.run.ServeResult`): latency
    distributions against the SLOs, throughput, load over time, pools and the busiest links."""
    from cosim.report.serving import links_data, pool_data, summary_data, throughput_lines, timeline
    from cosim.serving.metrics import tpot_s, ttft_s

    dep = result.deployment
    page = Page(out_dir, f"Serving: {dep.model.name}, {dep.mode}, {dep.num_gpus} GPUs of {dep.topology.name}")
    if description:
        page.p(description, meta=True)
    if not result.feasible:
        page.h2("Infeasible")
        page.items(result.reasons)
        return page.write()
    run = result.run
    done = run.finished
    page.h2("Latency and throughput")
    page.table(summary_data(result, slo))
    page.items(throughput_lines(result))
    panels = [("TTFT", ttft_s(run)[done], slo.ttft_s if slo else None),
              ("TPOT", tpot_s(run)[done], slo.tpot_s if slo else None),
              ("inter-token", run.itl_s if run.itl_s is not None else np.array([]), None)]
    if result.summary.kv_transfer.count:
        panels.append(("KV transfer", run.kv_transfer_s[done], None))
    page.figure("latency", lambda p: plots.cdf_plot(panels, p, title="Latency distributions (finished requests)"),
                "Empirical CDFs of TTFT, TPOT (per request), inter-token gaps (every token) and KV transfers, "
                "with p50/p90/p99 and the SLOs")
    t, tokens, in_flight = timeline(run)
    if len(t):
        page.figure("timeline", lambda p: plots.timeline_plot(
            t, [("output tokens/s", tokens), ("requests in flight", in_flight)], p, title="Load over the run"),
                    "Output tokens per second (each request's tokens spread evenly from its first to its last "
                    "token) and requests in the system over simulated time")
    page.h2("Pools and links")
    page.table(pool_data(result))
    page.table(links_data(result, top_links))
    return page.write()
