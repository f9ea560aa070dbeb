"""The benchmark results page: figure lines picked from outputs, a row per target."""
import datetime as dt

from smw import benchreport

OUTPUT = """26/11/23 16:19:26 WARN NativeCodeLoader: Unable to load native-hadoop library
loading sources
houses 50 | readings 16,751,163 | 24.3 s (689,684 readings/s)
house daily-kWh API, 50 clients:  p50 3.1 ms  p99 9.0 ms  (goal p99 <= 50 ms)
"""


def test_headline_keeps_figure_lines_and_drops_log_noise():
    lines = benchreport.headline(OUTPUT)
    assert lines == ["houses 50 | readings 16,751,163 | 24.3 s (689,684 readings/s)",
                     "house daily-kWh API, 50 clients:  p50 3.1 ms  p99 9.0 ms  (goal p99 <= 50 ms)"]


def test_render_has_machine_a_row_per_target_and_marks_failures():
    page = benchreport.render([("bench-a", 0, 12.4, OUTPUT), ("bench-b", 2, 3.0, "boom\n")],
                              dt.datetime(2026, 11, 23, 10, 0))
    assert "2026-11-23 10:00 UTC" in page
    assert "logical cores" in page
    assert "| `make bench-a` | ok | 12 s | houses 50 \\| readings 16,751,163" in page
    assert "| `make bench-b` | failed (exit 2) | 3 s | (no figures printed) |" in page
    assert "WARN NativeCodeLoader" not in page
