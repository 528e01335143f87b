"""NVLink MoE all-to-all across a GB200 NVL72 rack (cosim.validation.nvlink_a2a).

Re-simulates a token subsample of aiconfigurator-core's gb200 trtllm_alltoall rows (flow backend,
about 1.5 s), fits the kernel-rate constants on EP 2/4 (one tray) and asserts the error on the
held-out EP 8-64 rows with the bounds docs/validation-comm.md (section 9) reports.
"""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("aiconfigurator_core")

from cosim.network.nvlink_a2a import phase_bytes_per_token  # noqa: E402
from cosim.validation import nvlink_a2a as N  # noqa: E402

TOKENS = (1, 16, 128, 1024, 8192, 65536)
HELD_OUT_BOUNDS = {  # median |err| % over EP 8-64 on the subsample (measured in comments)
    "dispatch": 16,                  # 13.1
    "combine": 20,                   # 17.1
    "combine_low_precision": 62,     # 58.4  missed: a quantization-bound kernel, not the wire
}


@pytest.fixture(scope="module")
def validated():
    rows = N.load_rows()
    rows = rows[rows.num_tokens.isin(TOKENS)]
    sim = N.simulate_rows(rows)
    constants = N.fit(sim[sim.ep_size.isin(N.FIT_EP_SIZES)])
    return sim, constants, N.predict(sim, constants)


def test_rows_are_measured_and_span_the_rack():
    rows = N.load_rows()
    assert set(rows.ep_size) == {2, 4, 8, 16, 32, 64}
    assert set(rows.phase) == set(N.PHASES) and (rows.measured_s > 0).all()
    assert ((rows.hidden_size == 7168) & (rows.topk == 8) & (rows.num_experts == 256)).all()


def test_traffic_is_deduplicated_per_destination_rank():
    row = next(pd.DataFrame([dict(ep_size=8, num_tokens=1000, num_experts=256, topk=8, hidden_size=7168,
                                  phase="dispatch", dtype="bfloat16")]).itertuples(index=False))
    fs = N.row_flows(row)
    # A token goes to each rank holding one of its 8 experts once: 1 - C(224, 8) / C(256, 8) per rank.
    from math import comb

    p_rank = 1 - comb(224, 8) / comb(256, 8)
    per_token = 2 * 7168 + 8 * 8
    sent = np.bincount(fs.src, weights=fs.size_bytes, minlength=8)
    assert sent == pytest.approx(np.full(8, 7 * p_rank * 1000 * per_token), rel=1e-3)
    assert phase_bytes_per_token("combine_low_precision", "bfloat16", 7168, 8) == 7168 / 2 + 7168 / 16
    with pytest.raises(ValueError, match="phase"):
        phase_bytes_per_token("prepare", "bfloat16", 7168, 8)


def test_held_out_ep_sizes_within_stated_bounds(validated):
    _, _, pred = validated
    held = pred[~pred.ep_size.isin(N.FIT_EP_SIZES)]
    for phase, bound in HELD_OUT_BOUNDS.items():
        err = held[held.phase == phase].error_pct.abs().median()
        assert err <= bound, (phase, err, bound)
    assert held[held.phase != "combine_low_precision"].error_pct.abs().median() <= 16  # 14.6
    fit_rows = pred[pred.ep_size == 4]
    assert fit_rows.error_pct.abs().median() <= 5  # 0.9, in sample


def test_fit_refuses_cross_tray_rows(validated):
    sim, constants, _ = validated
    with pytest.raises(ValueError, match="EP"):
        N.fit(sim[sim.ep_size == 8])
    # combine moves bf16 whatever the dispatch dtype: the three fits agree within 2 %
    rates = [constants[("combine", d)].kernel_rate_bytes_per_s for d in ("bfloat16", "fp8", "nvfp4")]
    assert max(rates) / min(rates) < 1.02
