"""A built-in example for ``medequity audit``: a simulated cohort and a simulated biased classifier.

The bias mechanisms are known, so the report can be read against them:
- ``sex``: the disease signal is weaker in women (difficulty) → lower AUC for F;
- ``age``: prevalence rises with age (indirect path S→Y) → selection-rate gap (DP) but ADF ≈ 0;
- ``race``: the classifier under-scores Black patients (a direct effect on Ŷ) → higher FNR for the
  group (under-diagnosis, Seyyed-Kalantari et al.) and ADF > 0;
- ``site``: no bias (a control: its gaps should not be significant).
Predictions and metadata come as two tables joined on ``sample_id``, as in a real audit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulated_cohort(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, metadata) of ``n`` simulated chest-radiograph studies."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], size=n, p=[0.45, 0.55])
    age = np.clip(rng.normal(58, 17, size=n), 18, 95).round()
    race = rng.choice(["White", "Black", "Asian", "Other"], size=n, p=[0.6, 0.2, 0.12, 0.08])
    site = rng.choice(["site-A", "site-B", "site-C"], size=n)
    prevalence = 1 / (1 + np.exp(-(age - 62) / 10)) * 0.6 + 0.1
    label = (rng.random(n) < prevalence).astype(int)
    signal_strength = np.where(sex == "F", 0.7, 1.2)
    logit = signal_strength * (label - 0.5) * 2 + rng.normal(0, 1.0, size=n)
    logit -= np.where(race == "Black", 0.9, 0.0)  # the model's own bias: under-scoring one group
    score = 1 / (1 + np.exp(-(logit - 0.2)))
    # A few unknown values, as real metadata has.
    sex = sex.astype(object)
    sex[rng.random(n) < 0.01] = None
    ids = [f"study-{i:05d}" for i in range(n)]
    predictions = pd.DataFrame({"sample_id": ids, "label": label, "score": score.round(6)})
    metadata = pd.DataFrame({"sample_id": ids, "sex": sex, "age": age, "race": race, "site": site})
    return predictions, metadata
