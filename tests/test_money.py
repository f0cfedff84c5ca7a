"""Money units, parsing, the one rounding function and display (DESIGN §2)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelbank.money import (
    MoneyError,
    credits_to_ucr,
    format_credits,
    format_usd,
    mul,
    parse_decimal,
    per_mtok,
    round_half_even,
    round_ucr,
    round_uusd,
    usd_to_uusd,
    uusd_to_ucr,
)

# ---------------------------------------------------------------- parse_decimal


def test_float_goes_through_str_not_binary_expansion() -> None:
    parsed = parse_decimal(1.5e-07)
    assert parsed == Decimal("1.5E-7")
    assert str(parsed) == "1.5E-7"
    binary = 1.5e-07
    assert parsed != Decimal(binary)  # the float's binary expansion is a different number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0.1, Decimal("0.1")),
        (2.5e-06, Decimal("0.0000025")),
        (3, Decimal(3)),
        (-7, Decimal(-7)),
        ("4.99", Decimal("4.99")),
        ("  12.50 ", Decimal("12.50")),
        ("1e-7", Decimal("0.0000001")),
        (Decimal("0.000015"), Decimal("0.000015")),
        (10**30, Decimal(10**30)),
    ],
)
def test_parse_decimal_accepts_numbers(raw: object, expected: Decimal) -> None:
    parsed = parse_decimal(raw)
    assert isinstance(parsed, Decimal)
    assert parsed == expected


@pytest.mark.parametrize(
    "raw",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "inf",
        "-Infinity",
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        True,
        False,
        None,
        "",
        "abc",
        "1,000",
        [1],
        b"1",
    ],
)
def test_parse_decimal_rejects_non_money(raw: object) -> None:
    with pytest.raises(MoneyError):
        parse_decimal(raw)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_parse_decimal_of_any_finite_float_is_its_repr(value: float) -> None:
    assert parse_decimal(value) == Decimal(repr(value))


# ---------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.5", 2),
        ("3.5", 4),
        ("-2.5", -2),
        ("-3.5", -4),
        ("0.5", 0),
        ("1.5", 2),
        ("-0.5", 0),
        ("2.4999999999", 2),
        ("2.5000000001", 3),
        ("-2.5000000001", -3),
        ("7", 7),
        ("0", 0),
        ("123456789012345678901234567890.5", 123456789012345678901234567890),
        ("123456789012345678901234567891.5", 123456789012345678901234567892),
    ],
)
def test_round_half_even(value: str, expected: int) -> None:
    result = round_half_even(Decimal(value))
    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize("value", [2.5, 3, "2.5", None])
def test_round_half_even_refuses_non_decimals(value: object) -> None:
    with pytest.raises(MoneyError):
        round_half_even(value)  # type: ignore[arg-type]


def test_round_ucr_and_round_uusd_are_the_same_rounding() -> None:
    assert round_ucr(Decimal("1125000.5")) == 1_125_000
    assert round_ucr(Decimal("1125001.5")) == 1_125_002
    assert round_uusd(Decimal("4990000.5")) == 4_990_000
    assert round_uusd(Decimal("-0.5")) == 0


@given(
    st.decimals(
        min_value=Decimal("-1e15"),
        max_value=Decimal("1e15"),
        places=8,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_rounding_error_at_most_half(value: Decimal) -> None:
    rounded = round_half_even(value)
    error = abs(Decimal(rounded) - value)
    assert error <= Decimal("0.5")
    if error == Decimal("0.5"):
        assert rounded % 2 == 0  # ties go to the even neighbour
    if value == value.to_integral_value():
        assert rounded == value


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_exact_halves_round_to_even(n: int) -> None:
    value = Decimal(n) + Decimal("0.5")
    rounded = round_half_even(value)
    assert rounded in (n, n + 1)
    assert rounded % 2 == 0


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("credits", "expected_ucr"),
    [
        ("50", 50_000_000),
        (50, 50_000_000),
        ("0.01", 10_000),
        ("0.000001", 1),
        ("0.0000005", 0),  # half-even: 0.5 µcr → 0
        ("0.0000015", 2),  # 1.5 µcr → 2
        ("0.0000025", 2),  # 2.5 µcr → 2
        ("-1.25", -1_250_000),
        (1.5, 1_500_000),
        (Decimal("2000"), 2_000_000_000),
    ],
)
def test_credits_to_ucr(credits: object, expected_ucr: int) -> None:
    result = credits_to_ucr(credits)  # type: ignore[arg-type]
    assert type(result) is int
    assert result == expected_ucr


@pytest.mark.parametrize("bad", [float("nan"), "x", True])
def test_credits_to_ucr_rejects_non_money(bad: object) -> None:
    with pytest.raises(MoneyError):
        credits_to_ucr(bad)  # type: ignore[arg-type]


def test_usd_to_uusd() -> None:
    assert usd_to_uusd("4.99") == 4_990_000
    assert usd_to_uusd("139.99") == 139_990_000
    assert usd_to_uusd(10) == 10_000_000
    assert usd_to_uusd("0.0000005") == 0
    assert usd_to_uusd("0.0000015") == 2


def test_uusd_to_ucr_default_rate_is_100_credits_per_usd() -> None:
    # $10 buys 1,000 credits: 10,000,000 µUSD → 1,000,000,000 µcr
    assert uusd_to_ucr(10_000_000) == Decimal(1_000_000_000)
    assert uusd_to_ucr(Decimal("1.5")) == Decimal(150)
    assert uusd_to_ucr(Decimal("0.000000123")) == Decimal("0.0000123")
    assert isinstance(uusd_to_ucr(1), Decimal)


def test_uusd_to_ucr_custom_rate() -> None:
    assert uusd_to_ucr(7, Decimal(90)) == Decimal(630)
    assert uusd_to_ucr(Decimal("2.5"), Decimal("99.5")) == Decimal("248.75")


@given(
    st.integers(min_value=0, max_value=10**15),
    st.decimals(min_value=1, max_value=1000, places=4, allow_nan=False, allow_infinity=False),
)
def test_uusd_to_ucr_is_exact(amount_uusd: int, rate: Decimal) -> None:
    converted = uusd_to_ucr(amount_uusd, rate)
    # 60-digit products are exact here: dividing back gives the input.
    assert converted / rate == amount_uusd
    assert converted == Decimal(amount_uusd) * rate


def test_mul_and_per_mtok_are_exact_and_refuse_floats() -> None:
    assert mul(Decimal("1.5"), 3, Decimal("1.10")) == Decimal("4.95")
    assert mul() == 1
    assert per_mtok(1, Decimal(1)) == Decimal("0.000001")
    assert per_mtok(1_000, Decimal(2_500_000)) == Decimal(2_500)
    big = 10**12
    assert per_mtok(big, Decimal("0.123456789012345678")) == Decimal("123456.789012345678")
    with pytest.raises(MoneyError):
        mul(Decimal(1), 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- display


@pytest.mark.parametrize(
    ("amount_ucr", "places", "expected"),
    [
        (1_234_500_000, 6, "1,234.500000 cr"),
        (0, 6, "0.000000 cr"),
        (1, 6, "0.000001 cr"),
        (-1_500_000, 6, "-1.500000 cr"),
        (1_234_500_000, 2, "1,234.50 cr"),
        (2_500_000, 0, "2 cr"),  # half-even
        (3_500_000, 0, "4 cr"),
        (-2_500_000, 0, "-2 cr"),
        (1_005_000, 2, "1.00 cr"),  # 100.5 hundredths → 100
        (1_015_000, 2, "1.02 cr"),  # 101.5 hundredths → 102
        (999_999, 2, "1.00 cr"),
        (-1, 2, "0.00 cr"),  # rounds to zero: no "-0.00"
        (1_000_000_000_000_000, 0, "1,000,000,000 cr"),
    ],
)
def test_format_credits(amount_ucr: int, places: int, expected: str) -> None:
    assert format_credits(amount_ucr, places) == expected


@pytest.mark.parametrize(
    ("amount_uusd", "places", "expected"),
    [
        (4_990_000, 2, "$4.99"),
        (139_990_000, 2, "$139.99"),
        (1_234_567_890_000, 2, "$1,234,567.89"),
        (0, 2, "$0.00"),
        (-4_990_000, 2, "-$4.99"),
        (5_000, 2, "$0.00"),  # half a cent → even (0)
        (15_000, 2, "$0.02"),  # 1.5 cents → 2
        (2_500, 6, "$0.002500"),
        (7_500_000, 0, "$8"),
    ],
)
def test_format_usd(amount_uusd: int, places: int, expected: str) -> None:
    assert format_usd(amount_uusd, places) == expected


def test_format_default_places() -> None:
    assert format_credits(50_000_000) == "50.000000 cr"
    assert format_usd(17_990_000) == "$17.99"


@pytest.mark.parametrize("places", [-1, 7])
def test_format_places_out_of_range(places: int) -> None:
    with pytest.raises(MoneyError):
        format_credits(1, places)
    with pytest.raises(MoneyError):
        format_usd(1, places)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_format_credits_round_trips_at_six_places(amount_ucr: int) -> None:
    text = format_credits(amount_ucr)
    assert text.endswith(" cr")
    assert credits_to_ucr(text.removesuffix(" cr").replace(",", "")) == amount_ucr
