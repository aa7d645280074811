"""Broker clock -> true UTC."""

from mt5d.actors.logic.utc import UtcOffset

H = 3_600_000


def test_fixed_offset():
    u = UtcOffset(7200)
    assert u.offset_ms == 2 * H and u.known
    assert not u.observe(10 * H, 0)


def test_auto_rounds_to_quarter_hours_and_follows_a_dst_switch():
    u = UtcOffset()
    wall = 1_800_000_000_000
    assert u.observe(wall + 3 * H - 1234, wall)  # summer: UTC+3, tick 1.2 s old
    assert u.offset_ms == 3 * H
    assert not u.observe(wall + 3 * H - 4000, wall)  # 4 s old: same offset
    assert not u.observe(wall + 3 * H + 6 * 60_000, wall)  # a clock 6 min fast still rounds to +3
    # Fall back to UTC+2 (the first tick after the switch).
    assert u.observe(wall + 2 * H + 100, wall + 100)
    assert u.offset_ms == 2 * H
    assert (wall + 2 * H) - u.offset_ms == wall


def test_half_hour_offsets():
    u = UtcOffset()
    assert u.observe(5 * H + 30 * 60_000 + 800, 0)  # UTC+05:30
    assert u.offset_ms == 5 * H + 30 * 60_000
