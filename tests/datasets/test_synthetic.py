"""Synthetic source: REDD layout, mains = circuits + untracked, REDD rates, determinism."""
import numpy as np
import pytest

from datasets import redd, synthetic

SEED = 11


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    houses = synthetic.write_tree(root, k=2, n_days=1, seed=SEED)
    return root, houses


def test_tree_has_the_redd_layout_and_label_set(tree):
    root, houses = tree
    for house in houses:
        house_dir = root / "low_freq" / house.house_id
        labels = redd.read_labels(house_dir)
        assert 11 <= len(labels) <= 26
        assert sorted(labels) == list(range(1, len(labels) + 1))
        assert labels[1] == labels[2] == "mains"
        assert set(labels.values()) <= set(redd.REDD_LABELS)
        assert sorted(int(p.stem.split("_")[1]) for p in house_dir.glob("channel_*.dat")) == sorted(labels)


def test_written_tree_reads_back_as_the_in_memory_house(tree):
    root, houses = tree
    written = redd.read_house(root / "low_freq" / houses[0].house_id)
    expected = synthetic.synth_house(houses[0], SEED)
    assert written.stats.malformed_lines == 0 and written.stats.duplicate_timestamps == 0
    for meter, channel in expected.channels.items():
        np.testing.assert_array_equal(written.channels[meter].ts_s, channel.ts_s)
        np.testing.assert_array_equal(written.channels[meter].power_w, channel.power_w)


def test_sample_rates_are_redds():
    house = synthetic.make_house(1, SEED, n_days=1)
    day = synthetic.synth_day(house, 0, SEED, synthetic.GapModel(0, (60, 60), 0, (1, 1), 0, (1, 1), 0))
    assert set(np.diff(day[1][0]).tolist()) == {1.0}
    assert set(np.diff(day[3][0]).tolist()) <= {3.0, 4.0}


def test_mains_legs_are_the_sum_of_their_circuits_plus_untracked():
    house = synthetic.make_house(2, SEED, n_days=1)
    no_gaps = synthetic.GapModel(0, (60, 60), 0, (1, 1), 0, (1, 1), 0)
    day = synthetic.synth_day(house, 0, SEED, no_gaps)
    for leg in (1, 2):
        circuits = [c.meter for c in house.circuits if c.leg == leg]
        common = day[leg][0]
        for meter in circuits:
            common = np.intersect1d(common, day[meter][0])
        total = np.zeros(len(common))
        for meter in circuits:
            total += day[meter][1][np.searchsorted(day[meter][0], common)]
        untracked = day[leg][1][np.searchsorted(day[leg][0], common)] - total
        model = house.untracked[leg - 1]
        # Each channel is rounded to 0.01 W, so allow that per channel on top of the noise.
        tolerance = model.noise_w + 0.01 * (len(circuits) + 1)
        assert len(common) >= 5  # circuits sample at independent phases: few common seconds
        assert np.all(np.abs(untracked - model.mean_w) <= tolerance)


def test_same_seed_same_house_other_seed_other_house():
    a = synthetic.synth_day(synthetic.make_house(1, 5, 1), 0, 5)
    b = synthetic.synth_day(synthetic.make_house(1, 5, 1), 0, 5)
    c = synthetic.synth_day(synthetic.make_house(1, 6, 1), 0, 6)
    assert all(np.array_equal(a[m][1], b[m][1]) for m in a)
    assert not (a.keys() == c.keys() and all(np.array_equal(a[m][1], c[m][1]) for m in a))


def test_some_days_have_long_gaps_and_most_do_not():
    house = synthetic.make_house(3, SEED, n_days=12)
    worst_gaps = []
    for d in range(12):
        ts_s = synthetic.synth_day(house, d, SEED)[1][0]
        edges = np.r_[house.start_ts_s + d * synthetic.DAY_S, ts_s, house.start_ts_s + (d + 1) * synthetic.DAY_S]
        worst_gaps.append(np.diff(edges).max())
    assert any(g > 1_800 for g in worst_gaps)
    assert sum(g <= 1_000 for g in worst_gaps) >= 6
