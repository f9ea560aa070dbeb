"""REDD reader: each tolerance on tiny trees written inline."""
import logging

import numpy as np
import pyarrow as pa
import pytest

from datasets import redd
from smw.schema import READING_ARROW


def make_house(root, channels, labels="1 mains\n2 mains\n3 refrigerator\n", name="house_1"):
    """Write a REDD house directory with the given labels text and channel bytes."""
    house_dir = root / "low_freq" / name
    house_dir.mkdir(parents=True)
    if labels is not None:
        (house_dir / "labels.dat").write_text(labels)
    for meter, payload in channels.items():
        (house_dir / f"channel_{meter}.dat").write_bytes(payload)
    return house_dir


def test_plain_channel_is_read_exactly(tmp_path):
    house = redd.read_house(make_house(tmp_path, {1: b"100 1.5\n101 2.25\n"}, labels="1 mains\n"))
    assert house.channels[1].ts_s.tolist() == [100.0, 101.0]
    assert house.channels[1].power_w.tolist() == [1.5, 2.25]
    assert house.stats.malformed_lines == 0


def test_blank_lines_and_crlf_are_tolerated_and_counted(tmp_path):
    ts_s, power_w, stats = redd.parse_channel_bytes(b"100 1.5\r\n\r\n101 2.5\r\n\n\n102 3\r\n")
    assert ts_s.tolist() == [100.0, 101.0, 102.0]
    assert power_w.tolist() == [1.5, 2.5, 3.0]
    assert stats.blank_lines == 3
    assert stats.malformed_lines == 0


def test_tabs_and_repeated_spaces_are_field_separators():
    ts_s, power_w, stats = redd.parse_channel_bytes(b"100\t1.5\n 101   2.5 \n")
    assert ts_s.tolist() == [100.0, 101.0]
    assert power_w.tolist() == [1.5, 2.5]
    assert stats.malformed_lines == 0


def test_exponent_notation():
    ts_s, power_w, _ = redd.parse_channel_bytes(b"1.306541834e9 1.02964E2\n1306541835 5e-1\n")
    assert ts_s.tolist() == [1306541834.0, 1306541835.0]
    assert power_w.tolist() == pytest.approx([102.964, 0.5])


def test_malformed_lines_are_skipped_counted_and_logged(caplog):
    raw = b"100 1\n101\n102 abc\nxyz 4\n103 2 9\n104 nan\n105 3\n"
    with caplog.at_level(logging.WARNING, logger="datasets.redd"):
        ts_s, power_w, stats = redd.parse_channel_bytes(raw, "channel_9.dat")
    assert ts_s.tolist() == [100.0, 105.0]
    assert power_w.tolist() == [1.0, 3.0]
    assert stats.malformed_lines == 5
    assert stats.lines == 7
    assert "channel_9.dat: 5 malformed lines" in caplog.text


def test_out_of_order_lines_are_sorted():
    ts_s, power_w, stats = redd.parse_channel_bytes(b"103 3\n101 1\n102 2\n")
    assert ts_s.tolist() == [101.0, 102.0, 103.0]
    assert power_w.tolist() == [1.0, 2.0, 3.0]
    assert stats.out_of_order_lines == 1


def test_duplicate_timestamps_keep_the_last_line():
    ts_s, power_w, stats = redd.parse_channel_bytes(b"101 1\n102 2\n101 7\n103 3\n102 8\n")
    assert ts_s.tolist() == [101.0, 102.0, 103.0]
    assert power_w.tolist() == [7.0, 8.0, 3.0]
    assert stats.duplicate_timestamps == 2


def test_missing_labels_is_an_error_naming_the_path(tmp_path):
    house_dir = make_house(tmp_path, {1: b"100 1\n"}, labels=None)
    with pytest.raises(redd.ReddFormatError, match=str(house_dir / "labels.dat")):
        redd.read_house(house_dir)


def test_unreadable_labels_is_an_error_naming_the_path(tmp_path):
    house_dir = make_house(tmp_path, {1: b"100 1\n"}, labels=None)
    (house_dir / "labels.dat").mkdir()  # a directory cannot be read as a file, even by root
    with pytest.raises(redd.ReddFormatError, match="labels.dat"):
        redd.read_house(house_dir)


def test_labels_keep_raw_spelling_and_add_normalised_names(tmp_path):
    labels = "1 mains\n2 dishwaser\n3 furance\n4 miscellaeneous\n"
    house = redd.read_house(make_house(tmp_path, {m: b"1 1\n" for m in (1, 2, 3, 4)}, labels=labels))
    assert [house.channels[m].label for m in (1, 2, 3, 4)] == ["mains", "dishwaser", "furance", "miscellaeneous"]
    assert [house.channels[m].appliance for m in (1, 2, 3, 4)] == ["mains", "dishwasher", "furnace", "miscellaneous"]


def test_unlabelled_and_missing_channels_are_counted(tmp_path):
    house = redd.read_house(make_house(tmp_path, {1: b"1 1\n", 7: b"1 2\n"}, labels="1 mains\n2 mains\n"))
    assert house.channels[7].label == "unknown"
    assert house.stats.unlabelled_channels == 1
    assert house.stats.missing_channels == 1


def test_house_table_is_time_sorted_in_the_reading_schema(tmp_path):
    house = redd.read_house(make_house(tmp_path, {1: b"102 10\n100 11\n", 2: b"101 20\n", 3: b"100 30\n"}))
    table = redd.house_table(house)
    assert table.schema == READING_ARROW
    assert table["ts_s"].to_pylist() == [100.0, 100.0, 101.0, 102.0]
    assert table["meter"].to_pylist() == [1, 3, 2, 1]
    assert table["label"].to_pylist() == ["mains", "refrigerator", "mains", "mains"]
    assert set(table["house_id"].to_pylist()) == {"house_1"}


def test_iter_readings_covers_every_house_in_house_order(tmp_path):
    make_house(tmp_path, {1: b"1 1\n"}, labels="1 mains\n", name="house_10")
    make_house(tmp_path, {1: b"1 2\n2 3\n"}, labels="1 mains\n", name="house_2")
    stats = redd.ReadStats()
    table = pa.Table.from_batches(list(redd.iter_readings(tmp_path, stats=stats)))
    assert table["house_id"].to_pylist() == ["house_2", "house_2", "house_10"]
    assert stats.readings == 3


def test_written_channel_reads_back_identically(tmp_path):
    ts_s = np.array([1306541834.0, 1306541835.5])
    power_w = np.array([102.96, 0.07])
    redd.write_channel(tmp_path / "channel_1.dat", ts_s, power_w)
    assert (tmp_path / "channel_1.dat").read_text() == "1306541834 102.96\n1306541835.5 0.07\n"
    read_ts, read_power, _ = redd.read_channel(tmp_path / "channel_1.dat")
    assert read_ts.tolist() == ts_s.tolist() and read_power.tolist() == power_w.tolist()
