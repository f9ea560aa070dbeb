"""The benchmark results page: figure lines picked from outputs, a row per target."""
import datetime as dt

from tools import benchreport

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


def test_headline_keeps_rows_of_number_tables_and_drops_service_chatter():
    output = ("kafka      ready on 127.0.0.1:9092 (0.1 s)\n"
              "/x/site-packages/pyspark/serializers.py:922: FutureWarning: concat (1.0 s)\n"
              "    target  houses      readings  seconds\n"
              "10,000,000       3    13,884,451      4.9    2,833,026\n"
              "          1 on       29529    2953    15.4    28.6    36.2\n")
    assert benchreport.headline(output) == ["10,000,000       3    13,884,451      4.9    2,833,026",
                                            "1 on       29529    2953    15.4    28.6    36.2"]


def test_headline_reads_through_progress_bars():
    output = "[Stage 5:>   (0 + 1) / 1]\r    80,000       65,574         0      62   10.46  4 (7.06)  [1 spikes without alert]\n"
    assert benchreport.headline(output) == ["80,000       65,574         0      62   10.46  4 (7.06)  [1 spikes without alert]"]
