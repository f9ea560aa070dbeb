"""Generator: determinism, applied scale/jitter/shift, all channels, spikes, energy, outputs."""
import numpy as np
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import pytest

from datasets import generate as cli
from datasets import generator as gen
from datasets import redd, synthetic
from smw.schema import READING_ARROW

SEED = 3


@pytest.fixture(scope="module")
def sources():
    return gen.load_sources("synthetic:2:3", SEED)


def read_dir_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    config = dict(houses=2, days=2, spikes_per_house_day=2, source="synthetic:1:3")
    gen.generate(gen.GeneratorConfig(seed=1, **config), tmp_path / "a")
    gen.generate(gen.GeneratorConfig(seed=1, **config), tmp_path / "b")
    gen.generate(gen.GeneratorConfig(seed=2, **config), tmp_path / "c")
    a, b, c = (read_dir_bytes(tmp_path / x) for x in "abc")
    assert any(name.startswith("readings/date=") for name in a)
    assert a == b
    readings_a = {k: v for k, v in a.items() if k.startswith("readings/")}
    readings_c = {k: v for k, v in c.items() if k.startswith("readings/")}
    assert readings_a != readings_c


def test_clean_days_reject_gaps_over_1000_s():
    day0 = -synthetic.SOURCE_UTC_OFFSET_S  # start of local day 0 in UTC seconds
    every_500 = np.arange(day0, day0 + 3 * 86_400, 500.0)
    with_gap = every_500[(every_500 < day0 + 86_400 + 3_000) | (every_500 > day0 + 86_400 + 4_500)]
    house = redd.House("x", None, {
        1: redd.Channel(1, "mains", "mains", every_500, np.ones(len(every_500))),
        3: redd.Channel(3, "oven", "oven", with_gap, np.ones(len(with_gap))),
    })
    assert gen.clean_days(house) == [0, 2]
    late_start = every_500[every_500 > day0 + 1_100]  # 1100 s from midnight to first sample
    house.channels[3] = redd.Channel(3, "oven", "oven", late_start, np.ones(len(late_start)))
    assert gen.clean_days(house) == [1, 2]


def test_every_channel_is_kept_and_scale_and_jitter_are_applied(sources):
    generator = gen.Generator(gen.GeneratorConfig(houses=3, days=2, seed=SEED, spikes_per_house_day=0), sources)
    for plan in generator.plans:
        source = sources[plan.source]
        for day in range(2):
            house_day = generator.house_day(plan, day)
            source_day = source.days[(plan.first_source_day + day) % len(source.days)]
            assert set(generator.to_table(house_day)["meter"].to_pylist()) == set(source.meters.tolist())
            on = source_day.power_w > 0
            ratio = house_day.power_w[on] / source_day.power_w[on].astype(np.float64)
            expected = plan.scale * np.asarray(plan.channel_jitter)[source_day.channel[on]]
            np.testing.assert_allclose(ratio, expected, rtol=1e-9)
    assert all(0.8 <= p.scale <= 1.2 and all(0.95 <= j <= 1.05 for j in p.channel_jitter) for p in generator.plans)
    assert len({p.scale for p in generator.plans}) == 3


def test_houses_sharing_a_source_share_no_timestamp(sources):
    one_source = sources[:1]
    generator = gen.Generator(gen.GeneratorConfig(houses=3, days=1, seed=SEED, spikes_per_house_day=0), one_source)
    stamps = [set(generator.house_day(plan, 0).ts_s.tolist()) for plan in generator.plans]
    assert not stamps[0] & stamps[1] and not stamps[0] & stamps[2] and not stamps[1] & stamps[2]


def test_houses_metadata_is_consistent(sources):
    table = gen.Generator(gen.GeneratorConfig(houses=20, days=1, seed=SEED), sources).houses_table()
    rows = table.to_pylist()
    assert len({r["house_id"] for r in rows}) == 20
    for row in rows:
        assert len(row["zip"]) == 5 and row["zip"].isdigit()
        assert row["geohash"] == gen.geohash(row["lat"], row["lon"])
        assert row["tz"].startswith(("America/", "Pacific/"))
        assert row["source_house"] in {s.source_id for s in sources}


def test_geohash_matches_the_reference_encoding():
    # Published examples of the geohash algorithm.
    assert gen.geohash(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert gen.geohash(42.6, -5.6, 5) == "ezs42"


def expected_mean_w(model):
    """Mean power of a synthetic appliance model, from its parameters only."""
    if isinstance(model, synthetic.Steady):
        return model.mean_w
    if isinstance(model, synthetic.Cycling):
        duty = model.on_s / (model.on_s + model.off_s)
        return model.standby_w + model.on_w * duty + model.defrosts_per_day * model.defrost_w * model.defrost_s / 86_400
    if isinstance(model, synthetic.Thermostatic):
        return model.standby_w + model.on_w * np.mean(model.duty_by_hour)
    if isinstance(model, synthetic.Programme):
        run_j = sum(p.power_w * p.duration_s * p.duty for p in model.phases)
        return model.standby_w + model.runs_per_day * run_j / 86_400
    if isinstance(model, synthetic.Lighting):
        return model.standby_w + model.level_w * np.mean(model.profile)
    raise TypeError(model)


def riemann_kwh(ts_s, power_w):
    """Left Riemann sum: each reading holds until the next one."""
    return float(np.sum(power_w[:-1] * np.diff(ts_s))) / 3.6e6


def test_daily_kwh_matches_the_appliance_models():
    """Mean daily mains kWh of each derived house within 6 % of what its models imply."""
    sources = gen.load_sources("synthetic:2:14", SEED)
    params = {h.house_id: h for h in synthetic.make_houses(2, SEED, 14)}
    generator = gen.Generator(gen.GeneratorConfig(houses=4, days=10, seed=SEED, spikes_per_house_day=0), sources)
    for plan in generator.plans:
        source = sources[plan.source]
        house = params[source.source_id]
        leg_w = {leg: expected_mean_w(house.untracked[leg - 1]) for leg in (1, 2)}
        for circuit in house.circuits:
            leg_w[circuit.leg] += circuit.share * expected_mean_w(circuit.model)
        expected_kwh = plan.scale * sum(plan.channel_jitter[i] * leg_w[meter] * 24 / 1000
                                        for i, meter in enumerate(source.meters.tolist()) if meter in (1, 2))
        measured = []
        for day in range(10):
            house_day = generator.house_day(plan, day)
            measured.append(sum(riemann_kwh(house_day.ts_s[house_day.channel == i], house_day.power_w[house_day.channel == i])
                                for i in (0, 1)))
        assert np.mean(measured) == pytest.approx(expected_kwh, rel=0.06), (plan.house_id, measured)


def test_each_spike_is_in_the_data_where_and_as_large_as_the_ground_truth_says(tmp_path, sources):
    config = dict(houses=3, days=2, seed=SEED)
    summary = gen.generate(gen.GeneratorConfig(spikes_per_house_day=3, **config), tmp_path / "spiked", sources=sources)
    gen.generate(gen.GeneratorConfig(spikes_per_house_day=0, **config), tmp_path / "plain", sources=sources)
    spiked = pa_ds.dataset(tmp_path / "spiked" / "readings", partitioning="hive").to_table().to_pandas()
    plain = pa_ds.dataset(tmp_path / "plain" / "readings", partitioning="hive").to_table().to_pandas()
    keys = ["house_id", "meter", "ts_s"]
    merged = spiked.merge(plain, on=keys, suffixes=("", "_plain"), validate="one_to_one")
    assert len(merged) == len(spiked) == len(plain)
    merged["added_w"] = merged["power_w"] - merged["power_w_plain"]
    truth = pq.read_table(tmp_path / "spiked" / "spikes.parquet").to_pandas()
    assert len(truth) == summary.spikes > 0
    expected_added = np.zeros(len(merged))
    for spike in truth.itertuples():
        in_window = ((merged["house_id"] == spike.house_id) & (merged["ts_s"] >= spike.start_ts_s)
                     & (merged["ts_s"] < spike.start_ts_s + spike.duration_s))
        on_meter = in_window & (merged["meter"] == spike.meter)
        assert on_meter.sum() == spike.n_readings >= 5
        assert ((merged["ts_s"] == spike.start_ts_s) & on_meter).any()  # starts on a real sample
        expected_added[on_meter.to_numpy()] += spike.magnitude_w
        expected_added[(in_window & (merged["meter"] == spike.mains_meter)).to_numpy()] += spike.magnitude_w
    np.testing.assert_allclose(merged["added_w"], expected_added, atol=1e-6)


def test_parquet_partitions_hold_their_utc_date_in_the_reading_schema(tmp_path, sources):
    gen.generate(gen.GeneratorConfig(houses=2, days=2, seed=SEED), tmp_path, sources=sources)
    files = sorted((tmp_path / "readings").rglob("*.parquet"))
    assert files
    for path in files:
        table = pq.read_table(path, partitioning=None)
        assert table.schema == READING_ARROW
        dates = np.floor(table["ts_s"].to_numpy() / 86_400).astype("datetime64[D]").astype(str)
        assert set(dates) == {path.parent.name.removeprefix("date=")}
        assert np.all(np.diff(table["ts_s"].to_numpy()) >= 0)


def test_redd_format_reads_back_with_every_reading(tmp_path, sources):
    summary = gen.generate(gen.GeneratorConfig(houses=2, days=2, seed=SEED), tmp_path, "redd", sources=sources)
    tables = [redd.house_table(redd.read_house(d)) for d in sorted((tmp_path / "low_freq").iterdir())]
    assert sum(t.num_rows for t in tables) == summary.readings
    assert all(redd.read_house(d).stats.malformed_lines == 0 for d in (tmp_path / "low_freq").iterdir())
    generator = gen.Generator(gen.GeneratorConfig(houses=2, days=2, seed=SEED), sources)
    first = generator.to_table(generator.house_day(generator.plans[0], 0))
    np.testing.assert_allclose(tables[0]["power_w"].to_numpy()[:1000], first["power_w"].to_numpy()[:1000], atol=0.006)


def test_iter_batches_yields_time_ordered_batches_in_the_reading_schema(sources):
    generator = gen.Generator(gen.GeneratorConfig(houses=2, days=1, seed=SEED), sources)
    batches = list(generator.iter_batches(max_rows=50_000))
    assert all(b.schema == READING_ARROW and b.num_rows <= 50_000 for b in batches)
    assert sum(b.num_rows for b in batches) == sum(len(generator.house_day(p, 0).ts_s) for p in generator.plans)
    ts_s = np.concatenate([b["ts_s"].to_numpy() for b in batches if b["house_id"][0].as_py() == "h000001"])
    assert np.all(np.diff(ts_s) >= 0)


def test_cli_prints_a_summary_and_help(tmp_path, capsys):
    assert cli.main(["--houses", "1", "--days", "1", "--seed", "1", "--out", str(tmp_path), "--no-progress",
                     "--source", "synthetic:1:2", "--spikes-per-house-day", "2"]) == 0
    line = capsys.readouterr().out
    assert "houses 1" in line and "readings" in line and "bytes" in line and "spikes" in line
    assert (tmp_path / "houses.parquet").exists() and (tmp_path / "spikes.parquet").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0


def test_a_source_without_clean_days_is_a_clear_error(tmp_path):
    house_dir = tmp_path / "low_freq" / "house_1"
    house_dir.mkdir(parents=True)
    (house_dir / "labels.dat").write_text("1 mains\n")
    (house_dir / "channel_1.dat").write_text("1303102800 5\n1303110000 5\n")
    with pytest.raises(ValueError, match="no house with a clean day"):
        gen.load_sources(f"redd:{tmp_path}", SEED)


def test_resample_keeps_energy_gaps_and_order():
    from datasets.generator import resample

    ts = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 1.5, 130.0, 131.0])
    channel = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=np.int32)
    power = np.array([10.0, 20.0, 30.0, 40.0, 5.0, 7.0, 100.0, 200.0])
    order = np.lexsort((channel, ts))
    out_ts, out_power, out_channel = resample(ts[order], power[order], channel[order], 0.0, 60.0)
    # (0 s, ch 0), (0 s, ch 1), (120 s, ch 0): the empty minute 60-120 s stays a gap
    assert out_ts.tolist() == [0.0, 0.0, 120.0]
    assert out_channel.tolist() == [0, 1, 0]
    assert out_power.tolist() == [25.0, 6.0, 150.0]


def test_period_applies_to_every_house_day_and_keeps_spikes_visible():
    from datasets.generator import Generator, GeneratorConfig

    fine = Generator(GeneratorConfig(houses=1, days=1, seed=3, spikes_per_house_day=3))
    coarse = Generator(GeneratorConfig(houses=1, days=1, seed=3, spikes_per_house_day=3, period_s=60.0))
    a, b = fine.house_day(fine.plans[0], 0), coarse.house_day(coarse.plans[0], 0)
    assert len(b.ts_s) < len(a.ts_s) / 10
    assert np.all(np.diff(b.ts_s) >= 0)
    # the whole-day mean power per channel is about the same (means of equal-length periods)
    for ch in np.unique(a.channel):
        assert b.power_w[b.channel == ch].mean() == pytest.approx(a.power_w[a.channel == ch].mean(), rel=0.05)
    assert [s.spike_id for s in a.spikes] == [s.spike_id for s in b.spikes]


def test_period_means_without_spikes_equal_resampling_each_house_day():
    # House-days without spikes come from each source day's period means, scaled per
    # channel; they must equal resampling the full-rate house-day itself.
    from datasets.generator import Generator, GeneratorConfig, resample

    fine = Generator(GeneratorConfig(houses=3, days=4, seed=5, spikes_per_house_day=0))
    coarse = Generator(GeneratorConfig(houses=3, days=4, seed=5, spikes_per_house_day=0, period_s=60.0))
    for plan_fine, plan_coarse in zip(fine.plans, coarse.plans):
        for day in range(4):
            a, b = fine.house_day(plan_fine, day), coarse.house_day(plan_coarse, day)
            ts, power, channel = resample(a.ts_s, a.power_w, a.channel, fine.day_start_ts_s(plan_fine, day), 60.0)
            assert np.array_equal(b.ts_s, ts) and np.array_equal(b.channel, channel)
            np.testing.assert_allclose(b.power_w, power, rtol=1e-12)
    assert len(coarse._period_cache) < 3 * 4  # source days are shared between houses


def test_on_level_is_measured_above_the_standby_draw():
    # A kitchen circuit: 35 W standby all day, loads of 1,100-1,300 W 1 % of the time.
    rng = np.random.default_rng(1)
    use_w = np.linspace(1100.0, 1300.0, 100)
    kitchen = np.concatenate([35.0 + rng.uniform(-3, 3, 9900), use_w])
    assert gen.on_level_w(kitchen) == pytest.approx(np.quantile(use_w, 0.97))
    # A steady load has no state above its usual draw: its level is its own 97th percentile.
    steady = np.linspace(50.0, 70.0, 1000)
    assert gen.on_level_w(steady) == pytest.approx(np.quantile(steady, 0.97))
    assert gen.on_level_w(np.full(100, 2.0)) == 0.0  # never above the 10 W floor


def test_spike_magnitude_is_2_to_4_times_the_channels_on_level_in_that_house(sources):
    generator = gen.Generator(gen.GeneratorConfig(houses=4, days=3, seed=SEED, spikes_per_house_day=4), sources)
    checked = 0
    for house_day in generator.iter_house_days():
        plan, source = house_day.plan, generator.sources[house_day.plan.source]
        for spike in house_day.spikes:
            index = list(source.meters).index(spike.meter)
            # From the source's clean days, independently of the generator's own bookkeeping.
            power_w = np.concatenate([d.power_w[d.channel == index] for d in source.days]).astype(np.float64)
            on = power_w[power_w > max(10.0, 2 * np.median(power_w))]
            on = on if len(on) else power_w[power_w > 10.0]
            level_w = (np.quantile(on, 0.97) if len(on) else 0.0) * plan.scale * plan.channel_jitter[index]
            assert max(200.0, 2 * level_w) - 0.1 <= spike.magnitude_w <= max(200.0, 4 * level_w) + 0.1, spike
            checked += 1
    assert checked >= 20
