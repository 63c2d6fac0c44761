"""The synthetic generator's bias knobs do what they say (DATASETS.md "Synthetic data with known bias").

Each knob is checked with seeded data and a simple model (logistic regression on 4×4-block-mean
pixels), against bounds the test computes itself (permutation nulls) or binomial tolerances.
Because every generator stage has its own random stream, a biased preset and its unbiased
reference with the same seed share patients, signals and anatomy: comparisons between them are
paired and low-noise.
"""

from __future__ import annotations

import copy
import functools
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medequity.data import DATASETS, create_dataset
from medequity.data.synthetic import (
    SyntheticConfig,
    SyntheticConfigError,
    list_presets,
    make_synthetic,
    oracle_group_auc,
)

N = 3000
SEED = 0
# A larger test split than the default 80/10/10 gives the model checks statistical power.
SPLIT = {"train": 0.5, "val": 0.2, "test": 0.3}
N_PERMUTATIONS = 200


# --- helpers: features, a simple model, fairness quantities from counts ---------------------------


@functools.cache
def preset_data(preset: str, n: int = N):
    """A preset's data with the test split layout, built once per module (tests only read it)."""
    return make_synthetic(preset, n=n, seed=SEED, split_fractions=SPLIT)


def block_features(images: np.ndarray, block: int = 4) -> np.ndarray:
    """Downsampled pixels (block means) as features, scaled to [0, 1]."""
    x = images.astype(np.float32) / 255
    if x.ndim == 3:
        x = x[..., None]
    n, h, w, c = x.shape
    return x.reshape(n, h // block, block, w // block, block, c).mean(axis=(2, 4)).reshape(n, -1)


def fit_logistic(x: np.ndarray, y: np.ndarray):
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300)).fit(x, y)


class Trained:
    """A logistic regression trained on the train split, with its scores on every row."""

    def __init__(self, ds, attribute: str, target: str = "label"):
        self.table = ds.table
        self.split = ds.table["split"].to_numpy(dtype=str)
        self.y = ds.table[target].to_numpy(dtype=np.int64)
        self.group = ds.groups(attribute).to_numpy(dtype=str)
        x = block_features(ds.images)
        train = self.split == "train"
        model = fit_logistic(x[train], self.y[train])
        self.score = model.predict_proba(x)[:, 1]
        self.pred = (self.score > 0.5).astype(np.int64)

    def regrouped(self, ds, attribute: str) -> Trained:
        """The same model and scores, grouped by another attribute."""
        other = copy.copy(self)
        other.group = ds.groups(attribute).to_numpy(dtype=str)
        return other

    def rows(self, split: str) -> np.ndarray:
        return self.split == split

    def group_auc(self, split: str) -> dict[str, float]:
        rows = self.rows(split)
        return {
            g: roc_auc_score(self.y[rows & (self.group == g)], self.score[rows & (self.group == g)])
            for g in np.unique(self.group)
        }


def conditional_mutual_information(s: np.ndarray, y_hat: np.ndarray, y: np.ndarray) -> float:
    """I(S; Ŷ | Y) in nats from counts (Fair Diagnosis's ADF): Σ_y P(y) Σ_{s,ŷ} p log p/(p_s p_ŷ)."""
    codes = [np.unique(v, return_inverse=True)[1] for v in (y, s, y_hat)]
    shape = tuple(int(c.max()) + 1 for c in codes)
    counts = np.bincount(np.ravel_multi_index(codes, shape), minlength=np.prod(shape)).reshape(shape)
    p = counts / counts.sum()  # p(y, s, ŷ)
    p_y = p.sum(axis=(1, 2), keepdims=True)
    p_sy, p_hy = p.sum(axis=2, keepdims=True), p.sum(axis=1, keepdims=True)
    nonzero = p > 0
    # p(s,ŷ|y) / (p(s|y) p(ŷ|y)) = p(y,s,ŷ) p(y) / (p(y,s) p(y,ŷ))
    ratio = (p * p_y)[nonzero] / (p_sy * p_hy)[nonzero]
    return float((p[nonzero] * np.log(ratio)).sum())


def cmi_null_bound(s, y_hat, y, rng, quantile=0.99) -> float:
    """The `quantile` of I(S;Ŷ|Y) when S is permuted within each label (no conditional dependence)."""
    null = []
    for _ in range(N_PERMUTATIONS):
        s_perm = s.copy()
        for label in np.unique(y):
            rows = np.flatnonzero(y == label)
            s_perm[rows] = s[rng.permutation(rows)]
        null.append(conditional_mutual_information(s_perm, y_hat, y))
    return float(np.quantile(null, quantile))


def demographic_parity_difference(pred: np.ndarray, group: np.ndarray, affected: str) -> float:
    return float(pred[group == affected].mean() - pred[group != affected].mean())


def patient_permuted_groups(table: pd.DataFrame, group: np.ndarray, rng) -> np.ndarray:
    """Group labels shuffled between patients (images of one patient stay together)."""
    _, first, patient_index = np.unique(table["patient_id"].to_numpy(dtype=str), return_index=True,
                                        return_inverse=True)
    return group[first][rng.permutation(len(first))][patient_index]


# --- all knobs at zero -----------------------------------------------------------------------------


def test_unbiased_model_shows_no_significant_gap_and_attributes_are_invisible():
    ds = preset_data("cxr-unbiased")
    rng = np.random.default_rng(1)
    model = Trained(ds, "sex")
    features = block_features(ds.images)
    for attribute in ("sex", "age", "race"):
        trained = model.regrouped(ds, attribute)
        test = trained.rows("test")
        aucs = trained.group_auc("test")
        gap = abs(np.subtract(*aucs.values()))
        # Null: the same scores with group labels shuffled between test patients.
        y, score, table = trained.y[test], trained.score[test], ds.table[test]
        null_gaps = []
        for _ in range(N_PERMUTATIONS):
            g = patient_permuted_groups(table, trained.group[test], rng)
            null_gaps.append(abs(np.subtract(*[roc_auc_score(y[g == k], score[g == k]) for k in np.unique(g)])))
        assert gap <= np.quantile(null_gaps, 0.99), (attribute, aucs, np.quantile(null_gaps, 0.99))

        # A probe cannot predict S from X: its test AUC lies inside the permutation null around 0.5.
        probe_target = (trained.group == np.unique(trained.group)[0]).astype(int)
        train = trained.rows("train")
        probe = fit_logistic(features[train], probe_target[train])
        probe_score = probe.predict_proba(features[test])[:, 1]
        probe_auc = roc_auc_score(probe_target[test], probe_score)
        null_aucs = [roc_auc_score(rng.permutation(probe_target[test]), probe_score) for _ in range(N_PERMUTATIONS)]
        low, high = np.quantile(null_aucs, [0.005, 0.995])
        assert low <= probe_auc <= high, (attribute, probe_auc, low, high)


def test_unbiased_data_has_no_oracle_gap_and_balanced_labels():
    ds = make_synthetic("fundus-unbiased", n=2000, seed=SEED)
    for attribute in ds.attributes:
        oracle = oracle_group_auc(ds, attribute)
        assert abs(oracle.iloc[0] - oracle.iloc[1]) < 0.04, oracle
        prevalence = ds.table.groupby(f"group:{attribute}")["true_label"].mean()
        assert abs(prevalence.iloc[0] - prevalence.iloc[1]) < 0.06, prevalence
    assert (ds.table["label"] == ds.table["true_label"]).all()
    assert not ds.table["shortcut_marker"].any() and not ds.table["acquisition_shifted"].any()


# --- prevalence: the indirect path S→Y ------------------------------------------------------------


def test_prevalence_moves_demographic_parity_but_not_conditional_dependence():
    biased = preset_data("cxr-sex-prevalence")
    reference = preset_data("cxr-unbiased")
    prevalence = biased.table.groupby("group:sex")["true_label"].mean()
    assert prevalence["female"] - prevalence["male"] == pytest.approx(0.3, abs=0.05)

    dp = {}
    for name, ds in (("biased", biased), ("reference", reference)):
        trained = Trained(ds, "sex")
        test = trained.rows("test")
        dp[name] = demographic_parity_difference(trained.pred[test], trained.group[test], "female")
        if name == "biased":
            s, y_hat, y = trained.group[test], trained.pred[test], trained.y[test]
            adf = conditional_mutual_information(s, y_hat, y)
            bound = cmi_null_bound(s, y_hat, y, np.random.default_rng(2))
            assert adf <= bound, (adf, bound)  # Ŷ ⊥ S | Y: X depends on S only through Y
    # Paired with the same seed: DP moves by about 0.3 × (TPR − FPR) ≈ 0.15.
    assert dp["biased"] - dp["reference"] > 0.08, dp


# --- shortcut: the direct path S→X→Ŷ --------------------------------------------------------------


def test_shortcut_marker_follows_the_label_in_training_only():
    t = preset_data("derm-skin-tone-shortcut", 2000).table
    affected = t["group:skin_tone"] == "IV-VI"
    train = t["split"].isin(["train", "val"])
    assert not t.loc[~affected, "shortcut_marker"].any()
    marker_rate = t[affected & train].groupby("true_label")["shortcut_marker"].mean()
    assert marker_rate[0] == 0 and marker_rate[1] == pytest.approx(0.9, abs=0.04)
    test_rows = t[affected & ~train]
    test_rate = test_rows.groupby("true_label")["shortcut_marker"].mean()
    counts = test_rows["true_label"].value_counts()
    p = test_rows["shortcut_marker"].mean()
    standard_error = np.sqrt(p * (1 - p) * (1 / counts[0] + 1 / counts[1]))
    assert abs(test_rate[0] - test_rate[1]) < 4 * standard_error  # decorrelated: same rate for both labels
    assert test_rate.mean() == pytest.approx(0.45, abs=0.08)


def test_shortcut_is_learned_and_fails_on_the_test_split():
    n = 2000  # derm images are RGB: fewer suffice and keep the test fast
    biased = Trained(preset_data("derm-skin-tone-shortcut", n), "skin_tone")
    reference = Trained(preset_data("derm-unbiased", n), "skin_tone")
    val_auc, test_auc = biased.group_auc("val"), biased.group_auc("test")
    # The model rides the marker: the affected group looks easy on val and collapses on test.
    assert val_auc["IV-VI"] > 0.95
    assert min(test_auc.values()) < min(val_auc.values()) - 0.15, (val_auc, test_auc)
    assert min(test_auc.values()) < min(reference.group_auc("test").values()) - 0.1

    def adf(trained):
        test = trained.rows("test")
        return conditional_mutual_information(trained.group[test], trained.pred[test], trained.y[test])

    test = biased.rows("test")
    bound = cmi_null_bound(biased.group[test], biased.pred[test], biased.y[test], np.random.default_rng(3))
    assert adf(biased) > bound and adf(biased) > adf(reference) + 0.01, (adf(biased), adf(reference), bound)


def test_reversed_shortcut_drives_the_affected_group_below_chance():
    trained = Trained(preset_data("cxr-sex-shortcut"), "sex")
    assert trained.group_auc("val")["female"] > 0.9
    assert trained.group_auc("test")["female"] < 0.5
    assert trained.group_auc("test")["male"] > 0.75


# --- difficulty -------------------------------------------------------------------------------------


def test_difficulty_lowers_the_oracle_auc_of_the_affected_group():
    fundus = oracle_group_auc(make_synthetic("fundus-race-difficulty", n=2000, seed=SEED), "race")
    assert fundus["non-White"] < fundus["White"] - 0.08, fundus
    volume = oracle_group_auc(make_synthetic("volume-sex-difficulty", n=800, seed=SEED), "sex")
    assert volume["female"] < volume["male"] - 0.08, volume


def test_difficulty_gap_shows_in_a_trained_model():
    config = {"modality": "cxr", "difficulty": {"attribute": "age", "strength": 0.6}}
    ds = make_synthetic(config, n=N, seed=SEED, split_fractions=SPLIT)
    oracle = oracle_group_auc(ds, "age", split="test")
    model = Trained(ds, "age").group_auc("test")
    assert model[">60"] < model["<=60"] - 0.08, model
    assert model[">60"] <= oracle[">60"] + 0.02 and model["<=60"] <= oracle["<=60"] + 0.02  # no model beats the oracle


# --- label noise -----------------------------------------------------------------------------------


def test_label_noise_flips_labels_at_the_set_rate_per_group():
    t = preset_data("cxr-age-label-noise").table
    disagree = (t["label"] != t["true_label"]).groupby(t["group:age"]).agg(["mean", "size"])
    rate, size = disagree.loc[">60", "mean"], disagree.loc[">60", "size"]
    assert abs(rate - 0.2) < 4 * np.sqrt(0.2 * 0.8 / size), disagree  # 4 binomial standard errors
    assert disagree.loc["<=60", "mean"] == 0


def test_label_noise_direction_and_other_rate():
    knob = {"attribute": "sex", "strength": 0.3, "other_rate": 0.1, "direction": "positive_to_negative"}
    t = make_synthetic({"modality": "cxr", "label_noise": knob}, n=N, seed=SEED).table
    flipped = t["label"] != t["true_label"]
    assert (t.loc[flipped, "true_label"] == 1).all()  # only positives were flipped
    positives = t["true_label"] == 1
    rates = flipped[positives].groupby(t.loc[positives, "group:sex"]).mean()
    assert rates["female"] == pytest.approx(0.3, abs=0.05) and rates["male"] == pytest.approx(0.1, abs=0.04)


# --- acquisition -----------------------------------------------------------------------------------


def test_acquisition_makes_the_attribute_visible_without_changing_labels():
    shifted = preset_data("cxr-acquisition")
    reference = preset_data("cxr-unbiased")
    # Same seed, same labels: the knob touches the image only.
    np.testing.assert_array_equal(shifted.table["true_label"], reference.table["true_label"])
    prevalence = shifted.table.groupby("group:age")["label"].mean()
    assert abs(prevalence[">60"] - prevalence["<=60"]) < 0.06
    older = (shifted.table["group:age"] == ">60").to_numpy()
    np.testing.assert_array_equal(shifted.images[~older], reference.images[~older])
    assert shifted.table["acquisition_shifted"].to_numpy().tolist() == older.tolist()

    split = shifted.table["split"].to_numpy(dtype=str)
    target = older.astype(int)
    x = block_features(shifted.images)
    model = fit_logistic(x[split == "train"], target[split == "train"])
    assert roc_auc_score(target[split == "test"], model.predict_proba(x[split == "test"])[:, 1]) > 0.95


# --- representation, patients, splits ------------------------------------------------------------


def test_representation_sets_group_shares():
    ds = make_synthetic("derm-skin-tone-representation", n=2000, seed=SEED)
    patients = ds.table.drop_duplicates("patient_id")
    share = (patients["group:skin_tone"] == "IV-VI").mean()
    assert abs(share - 0.15) < 4 * np.sqrt(0.15 * 0.85 / len(patients))
    assert (patients["skin_tone"] >= 4).mean() == share  # the raw Fitzpatrick type agrees with the group
    other = (patients["group:sex"] == "female").mean()
    assert abs(other - 0.5) < 4 * np.sqrt(0.25 / len(patients))  # other attributes stay balanced

    white_majority = {"modality": "cxr", "representation": {"attribute": "race", "share": 0.8, "group": "White"}}
    flipped = make_synthetic(white_majority, n=N, seed=SEED).table.drop_duplicates("patient_id")
    assert (flipped["group:race"] == "White").mean() == pytest.approx(0.8, abs=0.04)


def test_patients_repeat_with_constant_attributes_and_patient_level_splits():
    ds = make_synthetic("derm-unbiased", n=1000, seed=SEED, max_images_per_patient=4)
    t = ds.table
    assert len(t) == 1000 and t["sample_id"].is_unique
    per_patient = t.groupby("patient_id")
    assert per_patient.size().max() > 1 and per_patient.size().max() <= 4
    constant = ["sex", "age", "skin_tone", "group:sex", "group:age", "group:skin_tone", "split"]
    assert (per_patient[constant].nunique() == 1).all().all()
    shares = t.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.01) and shares["test"] == pytest.approx(0.1, abs=0.01)
    assert set(t["group:age"]) == {"<=60", ">60"}
    assert ((t["age"] > 60) == (t["group:age"] == ">60")).all()


# --- determinism, speed, shapes, masks -------------------------------------------------------------


@pytest.mark.parametrize("modality", ["derm", "cxr", "fundus", "volume"])
def test_same_seed_gives_identical_data(modality):
    config = {"modality": modality, "shortcut": {"attribute": "sex", "strength": 0.5},
              "acquisition": {"attribute": "age", "strength": 0.5}}
    a = make_synthetic(config, n=200, seed=7)
    b = make_synthetic(config, n=200, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    pd.testing.assert_frame_equal(a.table, b.table)
    c = make_synthetic(config, n=200, seed=8)
    assert not np.array_equal(a.images, c.images)


def test_generation_is_fast():
    start = time.perf_counter()
    ds = make_synthetic("derm-skin-tone-shortcut", n=3000, seed=SEED)
    elapsed = time.perf_counter() - start
    assert ds.images.shape == (3000, 64, 64, 3)
    assert elapsed < 20, f"3,000 derm images took {elapsed:.1f} s"


def test_shapes_and_dtypes_per_modality():
    expected = {"derm": (64, 64, 3), "cxr": (64, 64), "fundus": (64, 64, 3), "volume": (16, 32, 32)}
    for modality, shape in expected.items():
        ds = make_synthetic({"modality": modality}, n=20, seed=SEED)
        assert ds.images.shape == (20, *shape) and ds.images.dtype == np.uint8
        assert ds.masks.shape == (20, *shape[:3 if modality == "volume" else 2])
        assert ds.load_image(3).shape == shape and len(ds.subset([1, 2])) == 2
        assert ds.table["label"].dtype == "Int64"
    small = make_synthetic({"modality": "cxr", "image_size": 32, "volume_shape": [8, 16, 16]}, n=5, seed=SEED)
    assert small.images.shape == (5, 32, 32)


def test_fundus_masks_encode_disc_and_cup_and_glaucoma_enlarges_the_cup():
    ds = make_synthetic("fundus-unbiased", n=400, seed=SEED)
    assert set(np.unique(ds.masks)) == {0, 1, 2}
    cup = (ds.masks == 2).sum(axis=(1, 2))
    disc = (ds.masks >= 1).sum(axis=(1, 2))
    assert (cup < disc).all()
    mask_cdr = np.sqrt(cup / disc)  # area ratio → radius ratio
    assert np.corrcoef(mask_cdr, ds.table["cup_to_disc_ratio"])[0, 1] > 0.95
    by_label = pd.Series(mask_cdr).groupby(ds.table["true_label"].to_numpy()).mean()
    assert by_label[1] > by_label[0] + 0.1


def test_oracle_auc_scores_against_noisy_labels_on_request():
    ds = preset_data("cxr-age-label-noise")
    clean = oracle_group_auc(ds, "age")
    noisy = oracle_group_auc(ds, "age", label="label")
    assert noisy[">60"] < clean[">60"] - 0.1 and noisy["<=60"] == pytest.approx(clean["<=60"])
    with pytest.raises(KeyError, match="race"):
        oracle_group_auc(make_synthetic("derm-unbiased", n=20), "race")


# --- presets, registry, config ---------------------------------------------------------------------


def test_every_preset_builds_and_is_documented():
    presets = list_presets()
    for name in ("derm-skin-tone-shortcut", "cxr-sex-prevalence", "fundus-race-difficulty", "derm-unbiased",
                 "cxr-age-label-noise", "cxr-acquisition", "volume-sex-difficulty"):
        assert name in presets
    for name, description in presets.items():
        assert description, name
        ds = make_synthetic(name, n=30, seed=SEED)
        assert len(ds) == 30 and ds.info["preset"] == name


def test_registered_as_a_dataset_with_overrides():
    assert "synthetic" in DATASETS
    ds = create_dataset("synthetic", preset="cxr-sex-prevalence", n=200, seed=0)
    assert ds.info["config"]["prevalence"] == {"attribute": "sex", "strength": 0.3, "group": None}
    weaker = create_dataset("synthetic", preset="derm-skin-tone-shortcut", n=50, seed=0, shortcut={"strength": 0.5})
    assert weaker.info["config"]["shortcut"]["attribute"] == "skin_tone"
    assert weaker.info["config"]["shortcut"]["strength"] == 0.5
    off = make_synthetic("derm-skin-tone-shortcut", n=50, shortcut=None)
    assert not off.table["shortcut_marker"].any()


def test_config_round_trips_through_yaml():
    config = SyntheticConfig.from_dict({"modality": "fundus", "difficulty": {"attribute": "race", "strength": 0.4},
                                        "split_fractions": [0.7, 0.1, 0.2]})
    again = SyntheticConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config
    a = make_synthetic(config, n=50, seed=1)
    b = make_synthetic(again.to_dict(), n=50, seed=1)
    np.testing.assert_array_equal(a.images, b.images)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"modality": "cxr", "prevalance": {}}, r"'prevalance'.*valid keys: .*prevalence"),
        ({"shortcut": {"attribute": "sex", "strenght": 0.5}}, r"shortcut\.strenght.*strength"),
        ({"modality": "cxr", "shortcut": {"attribute": "skin_tone", "strength": 0.5}}, r"shortcut\.attribute.*race"),
        ({"difficulty": {"attribute": "sex", "strength": 1.5}}, r"difficulty\.strength"),
        ({"shortcut": {"attribute": "sex", "strength": 0.5, "test": "flipped"}}, r"decorrelated"),
        ({"prevalence": {"attribute": "sex", "strength": 0.4}, "base_prevalence": 0.9}, r"outside \[0, 1\]"),
        ({"label_noise": {"attribute": "sex", "strength": 0.1, "group": "women"}}, r"'male', 'female'"),
        ({"modality": "mri"}, r"derm.*cxr.*fundus.*volume"),
        ({"split_fractions": {"train": 0.8, "tset": 0.2}}, r"'tset'.*train, val, test"),
        ({"n": 0}, r"\bn must be"),
        ({"representation": {"attribute": "sex", "strength": 0.3}}, r"representation\.strength.*share"),
    ],
)
def test_invalid_config_names_the_bad_key(config, message):
    with pytest.raises(SyntheticConfigError, match=message):
        SyntheticConfig.from_dict(config)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError, match="cxr-sex-prevalence"):
        make_synthetic("cxr-sex-prevalance")


def test_both_paths_preset_has_the_prevalence_gap_and_the_reversed_tag():
    t = preset_data("cxr-sex-shortcut-prevalence", 4000).table
    women, train, test = t["group:sex"] == "female", t["split"] == "train", t["split"] == "test"
    prevalence = t.groupby("group:sex")["true_label"].mean()
    assert prevalence["female"] - prevalence["male"] == pytest.approx(0.3, abs=0.05)  # indirect path
    assert not t.loc[~women, "shortcut_marker"].any()
    tagged_train = t[women & train].groupby("true_label")["shortcut_marker"].mean()
    assert tagged_train[1] == pytest.approx(0.9, abs=0.05) and tagged_train[0] == 0  # tag ⇒ disease in training
    tagged_test = t[women & test].groupby("true_label")["shortcut_marker"].mean()
    assert tagged_test[1] == 0 and tagged_test[0] > 0.5  # reversed: the tag marks healthy women in test


def test_severity_parameters_set_how_far_apart_the_classes_are():
    """The latent severity's Beta parameters by label: with positives Beta(5, 2) instead of (4, 2.5)
    the oracle AUC of both groups rises (analytically 0.94 vs 0.88 with signal_noise 0.1), the
    same knobs stay unbiased, and the setting round-trips through the YAML form."""
    default = oracle_group_auc(make_synthetic("derm-unbiased", n=2000, seed=SEED), "skin_tone")
    config = {"modality": "derm", "severity_positive": [5, 2]}
    separated_ds = make_synthetic(config, n=2000, seed=SEED)
    separated = oracle_group_auc(separated_ds, "skin_tone")
    assert (separated > default + 0.03).all() and separated.between(0.91, 0.97).all(), (default, separated)
    assert abs(separated.iloc[0] - separated.iloc[1]) < 0.04
    round_trip = SyntheticConfig.from_dict(SyntheticConfig.from_dict(config).to_dict())
    assert round_trip.severity_positive == (5.0, 2.0) and round_trip.severity_negative == (2.0, 5.0)
    for bad in ([5], [5, -1], "five"):
        with pytest.raises(SyntheticConfigError, match="severity_positive"):
            SyntheticConfig.from_dict({"severity_positive": bad})


def test_the_demo_preset_has_an_under_represented_minority_with_subtler_disease():
    """`make demo`'s data: non-White patients ~25% of the cohort, a useful oracle AUC for both
    groups, lower for non-White (the part of a model's AUC gap that is in the images)."""
    ds = make_synthetic("cxr-race-minority-difficulty", n=2000, seed=SEED)
    share = (ds.table["group:race"] == "non-White").mean()
    assert 0.21 < share < 0.29, share
    oracle = oracle_group_auc(ds, "race")
    assert oracle["White"] > 0.92 and 0.80 < oracle["non-White"] < oracle["White"] - 0.03, oracle
