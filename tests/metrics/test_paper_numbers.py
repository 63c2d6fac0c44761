"""Paper numbers quoted in METRICS.md, reproduced at the aggregate level.

Tolerances follow the printed precision: a value printed with 4 decimals must agree to within half
a unit of the last printed digit (plus a hair for the rounding of the inputs themselves).
FairMedFM prints percentages; we compute in [0, 1] units and compare to value / 100.
"""

import numpy as np
import pytest

from medequity.metrics import equity_scaled, gap, max_psd, mean_psd, skewness


def _half_ulp(printed: float, decimals: int) -> float:
    return 0.5 * 10.0 ** (-decimals)


def _sci_tol(printed: float) -> float:
    """Half a unit of the last digit of a number printed as d.dd e-k (3 significant digits)."""
    exponent = int(np.floor(np.log10(abs(printed))))
    return 0.5 * 10.0 ** (exponent - 2)


# --- FairDi --------------------------------------------------------------------------------------

FAIRDI = [
    # (label, overall AUC, group AUCs, ES-AUC (mean_abs_dev), MeanPSD, MaxPSD)
    ("Table 3 HAM10000 gender ERM", 0.8890, [0.8826, 0.8956], 0.8833, 7.31e-3, 1.46e-2),
    ("Table 11 PAPILA age ERM", 0.6498, [0.5322, 0.7812], 0.5779, 1.92e-1, 3.83e-1),
]


@pytest.mark.parametrize("label, overall, groups, es, mean_psd_paper, max_psd_paper", FAIRDI, ids=[r[0] for r in FAIRDI])
def test_fairdi_es_auc_mean_abs_dev(label, overall, groups, es, mean_psd_paper, max_psd_paper):
    # Independent expectation: FairDi eq. 4, written out by hand.
    hand = overall / (1 + np.mean([abs(overall - g) for g in groups]))
    assert hand == pytest.approx(es, abs=_half_ulp(es, 4) + 1e-4)
    value = float(equity_scaled(overall, groups, disparity="mean_abs_dev"))
    assert value == pytest.approx(es, abs=_half_ulp(es, 4))
    assert value == pytest.approx(hand, abs=1e-12)


@pytest.mark.parametrize("label, overall, groups, es, mean_psd_paper, max_psd_paper", FAIRDI, ids=[r[0] for r in FAIRDI])
def test_fairdi_mean_and_max_psd(label, overall, groups, es, mean_psd_paper, max_psd_paper):
    assert float(mean_psd(overall, groups)) == pytest.approx(mean_psd_paper, abs=_sci_tol(mean_psd_paper))
    assert float(max_psd(overall, groups)) == pytest.approx(max_psd_paper, abs=_sci_tol(max_psd_paper))


def test_fairdi_other_disparities_do_not_reproduce_table_3():
    """The variant matters: the sum form and the std form give different ES-AUC than printed
    (guards against silently swapping the variants)."""
    overall, groups = 0.6498, [0.5322, 0.7812]
    assert float(equity_scaled(overall, groups, disparity="sum_abs_dev")) == pytest.approx(
        overall / (1 + abs(overall - 0.5322) + abs(overall - 0.7812)), abs=1e-12
    )
    assert abs(float(equity_scaled(overall, groups, disparity="sum_abs_dev")) - 0.5779) > 0.01
    # For two groups the population std equals the mean absolute deviation from the group mean,
    # not from the overall value: close here but not identical.
    assert float(equity_scaled(overall, groups, disparity="std")) == pytest.approx(overall / (1 + 0.1245), abs=1e-12)


# --- FairMedFM Table 2 -------------------------------------------------------------------------


def test_fairmedfm_lp_auc_es_std():
    overall, groups = 0.7607, [0.7551, 0.7604]
    assert float(gap(groups)) == pytest.approx(0.0053, abs=0.5e-4)
    value = float(equity_scaled(overall, groups, disparity="std"))
    hand = overall / (1 + np.sqrt(np.mean((np.array(groups) - np.mean(groups)) ** 2)))
    assert value == pytest.approx(hand, abs=1e-12)
    assert value * 100 == pytest.approx(75.87, abs=0.005 + 1e-3)


def test_fairmedfm_sam_dsc_summaries():
    overall, groups = 0.8355, [0.8447, 0.8274]
    assert float(gap(groups)) * 100 == pytest.approx(1.73, abs=0.005 + 1e-9)
    # DSC_STD: population std of the two groups = half the gap.
    assert float(np.std(groups)) * 100 == pytest.approx(0.86, abs=0.005 + 1e-4)
    assert float(skewness(groups)) == pytest.approx(1.11, abs=0.005)
    assert float(skewness(groups)) == pytest.approx((1 - 0.8274) / (1 - 0.8447), abs=1e-12)
    es = float(equity_scaled(overall, groups, disparity="std"))
    assert es * 100 == pytest.approx(82.83, abs=0.005 + 1e-4)
    assert es == pytest.approx(0.8355 / (1 + 0.00865), abs=1e-12)


def test_paper_numbers_vectorised_in_one_call():
    """All FairDi rows at once through the leading axis give the same numbers."""
    overall = np.array([0.8890, 0.6498])
    groups = np.array([[0.8826, 0.8956], [0.5322, 0.7812]])
    np.testing.assert_allclose(equity_scaled(overall, groups, disparity="mean_abs_dev"), [0.8833, 0.5779], atol=0.5e-4)
    np.testing.assert_allclose(mean_psd(overall, groups), [7.31e-3, 1.92e-1], rtol=0.5e-2)
    np.testing.assert_allclose(max_psd(overall, groups), [1.46e-2, 3.83e-1], rtol=0.5e-2)
