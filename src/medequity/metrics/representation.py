"""Representation fairness: how much of the sensitive attribute a model's features encode.

A cross-validated linear probe predicts S from the features (FairMedFM appendix); its AUC is 0.5
when the features carry no information about S (macro one-vs-rest AUC for more than two groups).
The 2-D picture coloured by group is drawn by :mod:`medequity.report`.
"""

from __future__ import annotations

import numpy as np

from medequity.metrics.groups import encode_groups


def attribute_probe_auc(features, sensitive_features, *, cv: int = 5, random_state: int = 0, max_iter: int = 1000) -> float:
    """Cross-validated logistic-regression AUC for predicting the group from ``features``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be 2-D (n_samples, n_features); got shape {X.shape}")
    groups = encode_groups(sensitive_features, X.shape[0])
    keep = groups.codes >= 0
    X, codes = X[keep], groups.codes[keep]
    smallest = np.bincount(codes).min()
    folds = int(min(cv, smallest))
    if folds < 2:
        raise ValueError(f"every group needs at least 2 samples for a cross-validated probe; smallest has {smallest}")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    proba = cross_val_predict(model, X, codes, cv=splitter, method="predict_proba")
    if groups.n_groups == 2:
        return float(roc_auc_score(codes, proba[:, 1]))
    return float(roc_auc_score(codes, proba, multi_class="ovr", average="macro"))


def embed_2d(features, *, method: str = "tsne", random_state: int = 0, max_samples: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D embedding (t-SNE, or PCA for speed) of at most ``max_samples`` rows; returns (xy, rows)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(features, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(X.shape[0], size=min(max_samples, X.shape[0]), replace=False))
    X = X[rows]
    if X.shape[1] > 50 and X.shape[0] > 2:
        X = PCA(n_components=min(50, X.shape[0] - 1), random_state=random_state).fit_transform(X)
    if method == "pca":
        return PCA(n_components=2, random_state=random_state).fit_transform(X), rows
    if method != "tsne":
        raise ValueError(f"method must be 'tsne' or 'pca'; got {method!r}")
    perplexity = float(min(30, max(2, (X.shape[0] - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, random_state=random_state, init="pca").fit_transform(X), rows
