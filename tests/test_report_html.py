"""HTML reports opened in a real browser: Debian's headless Chromium (``/usr/bin/chromium``,
installed by ``scripts/install-test-deps.sh``) driven by Playwright (never a browser of its own).

Every page must load every image, log no console error and have no failed request; each page is
screenshot under the test's tmp_path. Chromium missing fails the tests (CI must run them); set
``COSIM_SKIP_BROWSER=1`` to skip them on a machine without it.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim.cli.main import main
from cosim.explore import experiment_from_dict, explore
from cosim.report.html import write_experiment_report

sys.path.insert(0, str(Path(__file__).parent))
from test_explore import TINY  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
NAME = "tiny <report> & 'co'"  # user text the page must escape

#: TINY with two models: DeepSeek-V3 does not fit on 8 H200 in any of these layouts (infeasible
#: points with their reasons, no simulation), Qwen3-30B-A3B does in every mode (an AFD one too).
SPEC = {**{k: v for k, v in TINY.items() if k != "model"}, "name": NAME,
        "models": [TINY["model"], "deepseek-ai/DeepSeek-V3"],
        "space": {**TINY["space"], "modes": ["aggregated", "pd", "aggregated+afd"], "max_batch": [8],
                  "afd": {"gpus": [8], "attention_gpus": [4], "micro_batches": [2]}}}


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's pages."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing: run scripts/install-test-deps.sh"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "playwright is missing: pip install '.[test]'"
    if missing:
        if os.environ.get("COSIM_SKIP_BROWSER"):
            pytest.skip(missing)
        pytest.fail(f"{missing} (or set COSIM_SKIP_BROWSER=1 to skip the browser tests)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, index: Path, screenshot: Path) -> dict:
    """Load ``index`` (file://), screenshot the whole page, and return its title, text, images
    (src, naturalWidth) and every console error, page error and failed request."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} {r.failure}"))
    page.goto(index.resolve().as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                           "i.naturalWidth, i.naturalHeight])")
    page.screenshot(path=str(screenshot), full_page=True)
    out = {"title": page.title(), "text": page.inner_text("body"), "images": images, "problems": problems}
    page.close()
    return out


def assert_page_ok(info: dict, min_images: int) -> None:
    assert not info["problems"], info["problems"]
    assert len(info["images"]) >= min_images, info["images"]
    not_loaded = [src for src, complete, w, h in info["images"] if not (complete and w > 0 and h > 0)]
    assert not not_loaded, f"images that did not load: {not_loaded}"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A small exploration's result folder (6 points, 3 infeasible, 3 finalists, AFD among them)."""
    base = tmp_path_factory.mktemp("report")
    spec = experiment_from_dict(SPEC, str(base / "tiny.yaml"))
    result = explore(spec, base / "out", workers=1, cache_dir=base / "cache")
    assert {r["status"] for r in result.rows} == {"ok", "infeasible"} and len(result.finalists) >= 2
    return base


def test_experiment_report_in_chromium(results, browser, tmp_path):
    out = results / "out"
    index = write_experiment_report(out)
    assert index == out / "report" / "index.html"
    folder = index.parent
    source = index.read_text()
    # relative links to PNGs next to the page, nothing from elsewhere, no temporary file left
    srcs = [s.split('"')[0] for s in source.split('<img src="')[1:]]
    assert srcs and all((folder / s).is_file() and "/" not in s for s in srcs)
    assert "http" not in source and "<script" not in source
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert html.escape(NAME) in source and NAME not in source  # escaped

    info = open_page(browser, index, tmp_path / "experiment.png")
    assert_page_ok(info, min_images=len(srcs))
    assert len(info["images"]) == len(srcs)
    text = info["text"]
    assert info["title"].startswith(f"Experiment {NAME}: 6 design points")  # the name, shown as written
    for part in ("Best deployment per mode", "Pareto front", "Finalists", "flow vs packet", "hottest links",
                 "aggregated+afd", "infeasible", "exceed", "usable HBM"):  # reasons of the infeasible modes
        assert part in text, part
    alts = " ".join(page_alt for page_alt in source.split('alt="')[1:])
    assert "Attention and FFN groups" in alts and "Step breakdown" in alts and "busiest links" in alts
    assert (tmp_path / "experiment.png").stat().st_size > 10_000

    # deterministic: the same folder gives the same files, byte for byte; the CLI writes the same
    before = _digests(folder)
    assert main(["report", str(out), "-o", str(tmp_path / "again")]) == 0
    assert _digests(tmp_path / "again") == before


def test_report_command_errors_and_a_folder_without_finalists(tmp_path, capsys, browser):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results.parquet" in capsys.readouterr().out
    (tmp_path / "a-file").write_text("")
    assert main(["net", "-t", "h100-hgx-node", "--report", str(tmp_path / "a-file")]) == 2
    assert "--report" in capsys.readouterr().out  # refused before simulating
    # rows only (cosim explore --no-finalists), with user text to escape in a reason
    rows = [{"key": "a", "model": "m", "topology": "t", "workload": "w", "mode": "aggregated", "status": "ok",
             "reason": "", "label_pools": "1 x TP8", "concurrency": 8, "gpus": 8, "tokens_per_s_per_gpu": 100.0,
             "tokens_per_s_per_user": 50.0, "ttft_p90_ms": 10.0, "tpot_p90_ms": 5.0},
            {"key": "b", "model": "m", "topology": "t", "workload": "w", "mode": "pd", "status": "infeasible",
             "reason": "pool <prefill> & more", "label_pools": "x", "concurrency": None, "gpus": 8,
             "tokens_per_s_per_gpu": None, "tokens_per_s_per_user": None, "ttft_p90_ms": None, "tpot_p90_ms": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "results.parquet")
    (tmp_path / "experiment.json").write_text(json.dumps({"name": "synthetic", "skipped": {"odd <split>": 2}}))
    assert main(["report", str(tmp_path)]) == 0
    index = tmp_path / "report" / "index.html"
    source = index.read_text()
    assert "pool &lt;prefill&gt; &amp; more" in source and "odd &lt;split&gt; (2)" in source
    info = open_page(browser, index, tmp_path / "synthetic.png")
    assert_page_ok(info, min_images=1)  # the Pareto plot
    assert "No finalist records" in info["text"] and "pool <prefill> & more (1 of 1 points)" in info["text"]


def test_step_serve_and_net_reports_in_chromium(tmp_path, browser, capsys):
    step = tmp_path / "step"
    assert main(["step", "-m", "Qwen/Qwen3-30B-A3B", "-t", "h200-hgx-2node", "--layout", "afd", "--attention-gpus",
                 "4", "--ffn-gpus", "8", "--batch", "16", "--context", "1024", "--gpus", "0-3,8-15",
                 "--report", str(step)]) == 0
    serve = tmp_path / "serve"
    assert main(["serve", str(REPO / "experiments/deployments/qwen3-30b-pd-h200.yaml"), "--workload", "chat",
                 "--concurrency", "16", "-n", "64", "--cache", str(tmp_path / "cache"), "-q",
                 "--report", str(serve)]) == 0
    net = tmp_path / "net"
    assert main(["net", "-t", "h100-hgx-2node", "-c", "all_to_all", "-s", "256KiB", "-q", "--report", str(net)]) == 0
    printed = capsys.readouterr().out
    for folder in (step, serve, net):
        assert f"report: {folder / 'index.html'}" in printed

    info = open_page(browser, step / "index.html", tmp_path / "step.png")
    assert_page_ok(info, min_images=4)  # breakdown, AFD groups, MoE bytes per layer and expert load, link heat map
    assert "AFD groups" not in info["title"] and "hottest links" in info["text"] and "afd" in info["text"]
    assert "MoE token traffic" in info["text"] and "straggler factor" in info["text"]

    info = open_page(browser, serve / "index.html", tmp_path / "serve.png")
    assert_page_ok(info, min_images=2)  # latency CDFs, load over time
    for part in ("TTFT", "TPOT", "KV transfer", "SLO attainment", "Pools", "Busiest links"):
        assert part in info["text"], part

    info = open_page(browser, net / "index.html", tmp_path / "net.png")
    assert_page_ok(info, min_images=1)
    assert "Hottest links" in info["text"] and "rail" in info["text"]
