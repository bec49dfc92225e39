"""The self-check flags exactly the cited figures that no computed fact supports."""

from __future__ import annotations

from tallygate.research.data import load_sample
from tallygate.research.facts import compute_facts
from tallygate.research.selfcheck import check

FACTS = compute_facts(load_sample("two-tickers"))
F = {f.key: f for f in FACTS}


def test_five_correct_figures_and_one_wrong_flag_exactly_the_wrong_one() -> None:
    wrong = F["ACME.vol_63d"].value * 100 + 3.0
    text = (
        f"ACME closed at {F['ACME.last_close'].display} on {F['ACME.last_date'].display}, "
        f"{F['ACME.return_full'].display} over the period. "
        f"BOLT's maximum drawdown was {F['BOLT.max_drawdown'].display}, "
        f"and its 14-day RSI is {F['BOLT.rsi_14'].display}. "
        f"ACME's 3-month volatility was {wrong:.2f}%."
    )
    result = check(text, FACTS)
    assert len(result.citations) == 6
    assert [c.text for c in result.mismatches] == [f"{wrong:.2f}%"]
    assert not result.ok and "no computed fact has this value" in result.mismatches[0].note


def test_other_roundings_and_a_lost_minus_sign_still_match() -> None:
    drawdown = F["BOLT.max_drawdown"].value * 100
    text = (
        f"BOLT fell {abs(drawdown):.1f}% from its peak; the ACME/BOLT correlation was "
        f"{F['corr.ACME.BOLT'].value:.3f}. ACME is {F['ACME.return_full'].value * 100:.0f}% up."
    )
    result = check(text, FACTS)
    assert result.ok and len(result.citations) == 3


def test_a_figure_of_the_other_symbol_is_a_mismatch() -> None:
    text = f"ACME's 200-day average is {F['BOLT.sma_200'].display}."
    (citation,) = check(text, FACTS).citations
    assert not citation.ok and "BOLT.sma_200" in citation.note


def test_window_lengths_and_plain_counts_are_not_figures() -> None:
    text = "The 14-day RSI and the 200-day average over 6 months of 252 trading days."
    assert check(text, FACTS).citations == []
