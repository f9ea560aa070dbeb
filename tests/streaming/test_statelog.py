"""The meter state log: the state after the last committed batch, whatever a crash left behind."""
import numpy as np

from streaming.episodes import MeterStates
from streaming.statelog import StateLog


def advance(states: MeterStates, batch_id: int) -> np.ndarray:
    """Batch `batch_id` of a toy stream: meter m of house h reports; a new meter every other batch."""
    rows = states.rows(["h1", "h2"] + ([f"n{batch_id}"] if batch_id % 2 else []),
                       [3, 4] + ([5] if batch_id % 2 else []), ["fridge", "oven"] + (["kettle"] if batch_id % 2 else []))
    states.floats["last_ts_s"][rows] = 100.0 * batch_id
    states.ints["readings"][rows] += 1
    return rows


def run(folder, batches, snapshot_every, state=None):
    log = StateLog(folder, snapshot_every)
    states, meta = log.load(batches[0]) if state is None else state
    for batch_id in batches:
        rows = advance(states, batch_id)
        log.save(batch_id, states, rows, {"newest_ts_s": 100.0 * batch_id})
    return states


def same(a: MeterStates, b: MeterStates) -> bool:
    return (list(a.house_id) == list(b.house_id) and list(a.meter) == list(b.meter)
            and all(np.array_equal(a.floats[c], b.floats[c], equal_nan=True) for c in a.floats)
            and all(np.array_equal(a.ints[c], b.ints[c]) for c in a.ints))


def test_load_gives_the_state_after_the_batch_before(tmp_path):
    run(tmp_path, list(range(7)), snapshot_every=3)
    loaded, meta = StateLog(tmp_path, 3).load(7)
    assert same(loaded, run(tmp_path / "fresh", list(range(7)), snapshot_every=100))
    assert meta == {"newest_ts_s": 600.0}
    assert loaded.ints["readings"][0] == 7 and len(loaded) == 2 + 3  # n1, n3, n5


def test_a_batch_that_did_not_commit_is_forgotten_even_right_after_a_snapshot(tmp_path):
    run(tmp_path, list(range(5)), snapshot_every=3)  # a snapshot at batch 2, deltas after it
    run(tmp_path, [5], snapshot_every=3, state=StateLog(tmp_path, 3).load(5))
    assert (tmp_path / "snapshot-000000000005.arrow").exists()
    # Batch 5 wrote a snapshot but Spark never committed it: it runs again from the state after 4.
    loaded, meta = StateLog(tmp_path, 3).load(5)
    assert same(loaded, run(tmp_path / "fresh", list(range(5)), snapshot_every=100))
    assert meta["newest_ts_s"] == 400.0
    assert not (tmp_path / "snapshot-000000000005.arrow").exists()


def test_an_interrupted_write_leaves_no_file_under_a_final_name(tmp_path):
    run(tmp_path, [0, 1], snapshot_every=100)
    (tmp_path / "delta-000000000002.arrow.partial").write_bytes(b"torn")
    loaded, _ = StateLog(tmp_path, 100).load(2)
    assert loaded.ints["readings"][0] == 2
    assert not (tmp_path / "delta-000000000002.arrow.partial").exists()


def test_no_files_is_an_empty_state(tmp_path):
    states, meta = StateLog(tmp_path / "new", 10).load(0)
    assert len(states) == 0 and meta == {}
