import pytest

from cosim.errors import CosimError
from cosim.units import UnitError, parse_bandwidth_bps, parse_ratio, parse_size_bytes, parse_time_s


@pytest.mark.parametrize("text,bps", [
    ("400Gbps", 400e9), ("400 Gb/s", 400e9), ("450GB/s", 3.6e12), ("50GBps", 400e9),
    ("1.5Tbps", 1.5e12), ("100Mbps", 1e8),
])
def test_bandwidth(text, bps):
    assert parse_bandwidth_bps(text) == pytest.approx(bps)


@pytest.mark.parametrize("text,seconds", [
    ("1us", 1e-6), ("500ns", 5e-7), ("2.5ms", 2.5e-3), ("1s", 1.0), ("1µs", 1e-6), ("0ns", 0.0),
])
def test_time(text, seconds):
    assert parse_time_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,size", [(4096, 4096), ("4096B", 4096), ("4KiB", 4096), ("1MiB", 1 << 20), ("1MB", 10**6)])
def test_size(text, size):
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("bad", ["400", 400, "400G", "400gbps", "-5Gbps", "0Gbps", "fast", "400 Gbit"])
def test_bandwidth_rejects(bad):
    with pytest.raises(UnitError):
        parse_bandwidth_bps(bad)


@pytest.mark.parametrize("bad", ["1", 1, "1 sec", "1u", "-1us"])
def test_time_rejects(bad):
    with pytest.raises(UnitError):
        parse_time_s(bad)


@pytest.mark.parametrize("bad", [-1, "1.5B", "4kib", "x", True])
def test_size_rejects(bad):
    with pytest.raises(UnitError):
        parse_size_bytes(bad)


@pytest.mark.parametrize("value,ratio", [("2:1", 2.0), ("4:3", 4 / 3), ("1.5:1", 1.5), (" 3 : 2 ", 1.5),
                                         (2, 2.0), (1.5, 1.5), ("8:8", 1.0)])
def test_ratio(value, ratio):
    assert parse_ratio(value) == pytest.approx(ratio)


@pytest.mark.parametrize("bad,expect", [("2:0", "divides by zero"), ("0:1", "positive"), (0, "positive"),
                                        ("2:1:1", "ratio such as '2:1'"), ("2/1", "ratio such as '2:1'"),
                                        (True, "ratio such as '2:1'"), (float("inf"), "finite"), ("-2:1", "ratio")])
def test_ratio_rejects(bad, expect):
    with pytest.raises(UnitError, match=expect):
        parse_ratio(bad)


def test_unit_error_is_a_cosim_error_and_a_value_error():
    with pytest.raises(CosimError):
        parse_time_s("1 sec")
    assert issubclass(UnitError, CosimError) and issubclass(UnitError, ValueError)
