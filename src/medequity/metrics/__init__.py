"""Fairness metrics: pure NumPy functions at two levels (METRICS.md).

Sample level (fairlearn/scikit-learn style)::

    from medequity.metrics import group_metrics, equalized_odds_difference
    result = group_metrics(y_true, y_score, sensitive_features=df[["sex", "age_group"]], n_boot=1000)
    result.by_group, result.summaries()

Aggregate level (check numbers printed in papers)::

    from medequity.metrics import equity_scaled
    equity_scaled(0.8890, [0.8826, 0.8956], disparity="mean_abs_dev")  # FairDi Table 3: 0.8833
"""

from medequity.metrics._validation import GroupMetricWarning
from medequity.metrics.aggregate import (
    equity_scaled,
    gap,
    gap_to_overall,
    group_disparity,
    max_psd,
    mean_psd,
    ratio,
    skewness,
    summarize,
    worst_group,
)
from medequity.metrics.calibration import (
    binary_cross_entropy,
    calibration_curve,
    ece_bin_index,
    expected_calibration_error,
)
from medequity.metrics.causal import adf
from medequity.metrics.compare import PairedComparison, paired_bootstrap
from medequity.metrics.frame import DEFAULT_METRICS, GroupMetricResult, group_metrics
from medequity.metrics.groups import (
    GROUP_PREFIX,
    INTERSECTION_SEP,
    UNKNOWN_CODE,
    Groups,
    canonical_attribute,
    encode_groups,
    group_names,
    intersection_name,
    is_intersection,
    same_attribute,
    split_intersection,
)
from medequity.metrics.parity import (
    accuracy_parity_difference,
    auc_gap,
    auc_max_psd,
    auc_mean_psd,
    auc_skewness,
    bce_gap,
    demographic_parity_difference,
    demographic_parity_ratio,
    ece_gap,
    equal_opportunity_difference,
    equalized_odds_difference,
    equalized_odds_half_sum,
    equity_scaled_auc,
    fairmedfm_equalized_odds,
    group_values,
    underdiagnosis_rates,
    worst_group_auc,
)
from medequity.metrics.ranking import RankComparison, compare_methods, nemenyi_critical_difference
from medequity.metrics.representation import attribute_probe_auc, embed_2d
from medequity.metrics.segmentation import (
    SEGMENTATION_METRICS,
    CDRResult,
    OverlapResult,
    PatientValues,
    SegmentationGroupResult,
    cup_to_disc_ratio_error,
    dice_per_sample,
    iou_per_sample,
    patient_means,
    segmentation_disparities,
    segmentation_group_metrics,
    segmentation_group_metrics_from_values,
    vertical_cup_to_disc_ratio,
)
from medequity.metrics.selection import distance_to_utopia, pareto_front, select_model
from medequity.metrics.summary import group_auc_summary, group_aucs
from medequity.metrics.surface import SurfaceResult, hd95_per_sample, nsd_per_sample, surface_distances
from medequity.metrics.thresholds import Threshold, best_f1_threshold, resolve_threshold, youden_threshold
from medequity.metrics.weighted import METRICS, MetricSpec, get_metric

__all__ = [
    "DEFAULT_METRICS", "GROUP_PREFIX", "GroupMetricResult", "GroupMetricWarning", "Groups",
    "INTERSECTION_SEP", "METRICS", "MetricSpec", "PairedComparison", "RankComparison", "Threshold",
    "UNKNOWN_CODE", "accuracy_parity_difference", "adf", "attribute_probe_auc", "auc_gap", "auc_max_psd",
    "auc_mean_psd", "auc_skewness", "bce_gap", "best_f1_threshold", "binary_cross_entropy",
    "calibration_curve", "canonical_attribute", "compare_methods", "demographic_parity_difference",
    "demographic_parity_ratio", "dice_per_sample", "distance_to_utopia", "ece_bin_index", "ece_gap",
    "embed_2d", "encode_groups", "equal_opportunity_difference", "equalized_odds_difference",
    "equalized_odds_half_sum", "equity_scaled", "equity_scaled_auc", "expected_calibration_error",
    "fairmedfm_equalized_odds", "gap", "gap_to_overall", "get_metric", "group_auc_summary", "group_aucs",
    "group_disparity", "group_metrics", "group_names", "group_values", "intersection_name", "iou_per_sample",
    "is_intersection", "max_psd", "mean_psd", "nemenyi_critical_difference", "paired_bootstrap",
    "pareto_front", "ratio", "resolve_threshold", "same_attribute", "segmentation_group_metrics",
    "select_model", "skewness", "split_intersection", "summarize", "underdiagnosis_rates", "worst_group",
    "worst_group_auc", "youden_threshold",
    # segmentation
    "CDRResult", "OverlapResult", "PatientValues", "SEGMENTATION_METRICS", "SegmentationGroupResult", "SurfaceResult",
    "cup_to_disc_ratio_error", "hd95_per_sample", "nsd_per_sample", "patient_means", "segmentation_disparities",
    "segmentation_group_metrics_from_values", "surface_distances", "vertical_cup_to_disc_ratio",
]
