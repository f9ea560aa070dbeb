"""Device parsers: pure, exact on good frames, rejecting garbage with a reason, never raising."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.devices import Event, Ignored, Reading, Rejected, Unknown
from ingest.devices.emu2 import Y2K_EPOCH_S, Emu2
from ingest.devices.pulse import PulseMeter

NOW = 1700000000.0


def demand(value_hex, multiplier="0x00000001", divisor="0x000003e8", stamp="0x1c6a2b3f"):
    return (f"<InstantaneousDemand>\n  <DeviceMacId>0xd8d5b90000001234</DeviceMacId>\n"
            f"  <TimeStamp>{stamp}</TimeStamp>\n  <Demand>{value_hex}</Demand>\n"
            f"  <Multiplier>{multiplier}</Multiplier>\n  <Divisor>{divisor}</Divisor>\n"
            f"  <DigitsRight>0x03</DigitsRight>\n</InstantaneousDemand>\n").encode()


def test_pulse_single_meter_power_and_host_time():
    meter = PulseMeter(impulses_per_kwh=1000)
    assert meter.feed(b"3600\r\n") == [b"3600"]
    assert meter.parse(b"3600", NOW) == Reading(meter=1, ts_s=NOW, power_w=1000.0, interval_ms=3600)


def test_pulse_impulses_per_kwh_is_a_setting():
    # K = 600: one blink is 6000 J; 6000 J in 3.6 s is 1666.7 W (a public server used 1000 here).
    assert PulseMeter(impulses_per_kwh=600).parse(b"3600", NOW).power_w == pytest.approx(3.6e9 / (600 * 3600))


def test_pulse_multi_meter_status_lines_and_garbage():
    meter = PulseMeter()
    frames = meter.feed(b"CONNECTED\nINFO firmware 1.2\n7 1800\nbl\xffah\n0\n12 3")
    assert frames == [b"CONNECTED", b"INFO firmware 1.2", b"7 1800", b"bl\xffah", b"0"]
    results = [meter.parse(f, NOW) for f in frames]
    assert isinstance(results[0], Ignored) and isinstance(results[1], Ignored)
    assert results[2] == Reading(meter=7, ts_s=NOW, power_w=2000.0, interval_ms=1800)
    assert results[3] is None and results[4] is None  # garbage, zero interval
    assert meter.feed(b"00\n") == [b"12 300"]  # the split line completes


def test_emu2_demand_scaled_signed_and_stamped_from_2000():
    device = Emu2(meter=1)
    (frame,) = device.feed(demand("0x0003e8"))
    reading = device.parse(frame, NOW)
    assert reading == Reading(meter=1, ts_s=0x1C6A2B3F + Y2K_EPOCH_S, power_w=1000.0)


def test_emu2_negative_demand_when_exporting():
    device = Emu2()
    (frame,) = device.feed(demand("0xfffffc18"))
    assert device.parse(frame, NOW).power_w == -1000.0  # not ~4.29e9


def test_emu2_zero_multiplier_or_divisor_means_one():
    device = Emu2()
    (frame,) = device.feed(demand("0x000002", multiplier="0x00000000", divisor="0x00000000"))
    assert device.parse(frame, NOW).power_w == 2000.0


def test_emu2_fragments_split_across_reads_and_garbage_between():
    device = Emu2()
    raw = b"\x00\xffnoise<Time" + demand("0x0001f4")
    frames = []
    for i in range(0, len(raw), 7):
        frames += device.feed(raw[i:i + 7])
    assert len(frames) == 1 and device.parse(frames[0], NOW).power_w == 500.0


def test_emu2_garbled_fragment_is_dropped_and_the_next_one_parses():
    device = Emu2()
    frames = device.feed(b"<InstantaneousDemand><Demand>0x01" + demand("0x000064"))
    results = [device.parse(f, NOW) for f in frames]
    assert results[0] is None and results[1].power_w == 100.0


def test_emu2_summation_and_price_events():
    device = Emu2(meter=2)
    summation = (b"<CurrentSummationDelivered><TimeStamp>0x1c6a2b3f</TimeStamp>"
                 b"<SummationDelivered>0x0000000001e240</SummationDelivered>"
                 b"<SummationReceived>0x00000000002710</SummationReceived>"
                 b"<Multiplier>0x00000001</Multiplier><Divisor>0x000003e8</Divisor></CurrentSummationDelivered>")
    price = (b"<PriceCluster><TimeStamp>0x1c6a2b3f</TimeStamp><Price>0x0000312d</Price><Currency>0x0348</Currency>"
             b"<TrailingDigits>0x05</TrailingDigits><Tier>0x01</Tier><StartTime>0x1c6a2000</StartTime>"
             b"<Duration>0x003c</Duration></PriceCluster>")
    event_s, event_p = (device.parse(f, NOW) for f in device.feed(summation + price))
    assert isinstance(event_s, Event) and event_s.kind == "summation"
    assert event_s.fields["energy_kwh"] == pytest.approx((123456 - 10000) / 1000)
    assert event_p.kind == "price" and event_p.fields["price_per_kwh"] == pytest.approx(12589 / 1e5)
    assert (event_p.fields["currency"], event_p.fields["duration_min"]) == (840, 60)


def test_emu2_time_cluster_is_valid_but_ignored():
    device = Emu2()
    (frame,) = device.feed(b"<TimeCluster><UTCTime>0x1c6a2b3f</UTCTime></TimeCluster>")
    assert isinstance(device.parse(frame, NOW), Ignored)


def feed_and_parse(device, chunks):
    """Feed `chunks` to `device` in turn and parse every frame it cuts from them."""
    for chunk in chunks:
        for frame in device.feed(chunk):
            device.parse(frame, NOW)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_pulse_never_raises_on_arbitrary_bytes(chunks):
    feed_and_parse(PulseMeter(), chunks)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.sampled_from([demand("0x12"), b"<PriceCluster>",
                                                                    b"</Demand>", b"<TimeCluster><x>",
                                                                    b"<FooCluster>\n<x>"])),
                max_size=8))
def test_emu2_never_raises_on_arbitrary_bytes(chunks):
    feed_and_parse(Emu2(), chunks)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_emu2_parse_never_raises_on_any_frame(frame):
    Emu2().parse(frame, NOW)


def test_emu2_garbled_trailing_digits_is_a_bad_frame_not_a_hang():
    frame = (b"<PriceCluster><TimeStamp>0x1c6a2b3f</TimeStamp><Price>0x0000312d</Price>"
             b"<TrailingDigits>0xffffffff</TrailingDigits></PriceCluster>")
    assert Emu2().parse(frame, NOW) is None


def price(**fields):
    """A PriceCluster frame with sane fields, any of them replaced (value None leaves it out)."""
    values = {"TimeStamp": b"0x1c6a2b3f", "Price": b"0x0000312d", "Currency": b"0x0348", "TrailingDigits": b"0x05",
              "Tier": b"0x01", "StartTime": b"0x1c6a2000", "Duration": b"0x003c"}
    values.update(fields)
    body = b"".join(b"<%s>%s</%s>" % (name.encode(), value, name.encode())
                    for name, value in values.items() if value is not None)
    return b"<PriceCluster>" + body + b"</PriceCluster>"


@pytest.mark.parametrize(("frame", "reason"), [
    (price(Currency=b"0xFFFFFFFF"), "Currency out of range"),
    (price(Currency=b"0x3e8"), "Currency out of range"),  # 1000: ISO 4217 codes have three digits
    (price(Tier=b"0x1FF"), "Tier out of range"),
    (price(Duration=b"0xFFFFFFFFFF"), "Duration out of range"),
    (price(TrailingDigits=b"0x" + b"f" * 30), "TrailingDigits out of range"),
    (price(StartTime=b"0x100000000"), "StartTime out of range"),
    (price(TimeStamp=b"0x1ffffffff"), "TimeStamp out of range"),
    (price(Price=b"-0x5"), "Price not hex"),
    (price(Price=None), "Price missing"),
    (demand("0x" + "7" * 40), "Demand out of range"),
    (demand("0x0003e8", multiplier="0x1" + "0" * 8), "Multiplier out of range"),
    (b"<CurrentSummationDelivered><TimeStamp>0x1c6a2b3f</TimeStamp><SummationDelivered>0x1000000000000"
     b"</SummationDelivered></CurrentSummationDelivered>", "SummationDelivered out of range"),
    (b"<InstantaneousDemand><Demand>0x01</Demand>", "not well-formed XML"),
])
def test_emu2_field_wider_than_the_wire_rejects_the_frame_with_the_reason(frame, reason):
    device = Emu2()
    assert device.classify(frame, NOW) == Rejected(reason)
    assert device.parse(frame, NOW) is None


def test_emu2_fields_at_their_widest_are_accepted():
    event = Emu2().parse(price(Currency=b"0x3e7", Tier=b"0xff", Duration=b"0xffff", TrailingDigits=b"0x12"), NOW)
    assert (event.fields["currency"], event.fields["tier"], event.fields["duration_min"]) == (999, 255, 65535)
    assert Emu2().parse(demand("0x00000000ffffffff"), NOW).power_w == -1.0  # leading zeros are not width


@pytest.mark.parametrize(("label", "text"), [
    (b"Peak \x80", "Peak \u20ac"),  # cp1252 euro sign
    (b"Caf\xe9", "Caf\u00e9"),  # cp1252 / latin-1 e acute
    ("Tarif \u20ac".encode(), "Tarif \u20ac"),  # the device's own UTF-8
    (b"Tier\x81\xe9", "Tier\x81\u00e9"),  # 0x81 is not cp1252: latin-1 takes it
    (b"Bad\x01label", "Bad\ufffdlabel"),  # a control character XML forbids
])
def test_emu2_rate_label_in_any_charset_keeps_the_frame(label, text):
    event = Emu2().parse(price(RateLabel=label), NOW)
    assert isinstance(event, Event) and event.fields["rate_label"] == text
    assert event.fields["price_per_kwh"] == pytest.approx(12589 / 1e5)


def test_emu2_unknown_element_is_framed_and_named_not_dropped_as_noise():
    device = Emu2()
    frames = device.feed(b"<FooCluster>\r\n  <Bar>0x01</Bar>\r\n</FooCluster>\r\n" + demand("0x000064")
                         + b"<BazInfo><A>1</A></BazInfo>")
    assert [device.classify(f, NOW) for f in frames][0::2] == [Unknown("FooCluster"), Unknown("BazInfo")]
    assert device.parse(frames[1], NOW).power_w == 100.0
    assert device.parse(frames[0], NOW) == Ignored("unknown element FooCluster")


def test_emu2_left_over_fields_of_a_garbled_fragment_are_noise_not_unknown_elements():
    device = Emu2()
    frames = device.feed(b"eousDemand><TimeStamp>0x1c6a2b3f</TimeStamp><Demand>0x01</Demand></InstantaneousDemand>"
                         + demand("0x000064"))
    assert len(frames) == 1 and device.parse(frames[0], NOW).power_w == 100.0


def test_emu2_unknown_element_split_across_reads():
    device = Emu2()
    raw = b"junk<NewCluster>\n <Field>0x1</Field>\n</NewCluster>"
    frames = []
    for i in range(0, len(raw), 3):
        frames += device.feed(raw[i:i + 3])
    assert [device.classify(f, NOW) for f in frames] == [Unknown("NewCluster")]


def test_pulse_rejects_with_the_reason():
    meter = PulseMeter()
    assert meter.classify(b"bl\xffah", NOW) == Rejected("not a blink line")
    assert meter.classify(b"0", NOW) == Rejected("zero interval")
