"""Sensitive attributes: one documented coding from raw dataset values to groups.

DATASETS.md ("Sensitive attributes") and the papers fix the conventions; every function here turns a
column of *raw* values (as the dataset codes them) into a column of *group* labels (pandas
``string`` dtype). A value that is unknown, missing or not in the coding becomes ``<NA>``: it is
excluded from that attribute's analysis and counted as unknown in the data card. Nothing is ever
silently mapped to a group (FairMedFM maps ``sex != "M"`` to female, so "unknown" became female;
we do not).

The coding (group labels are the strings below, exactly):

============== ============================================================ ======================
attribute      rule                                                         groups
============== ============================================================ ======================
sex            dataset code → male/female; numeric codes need ``codes=``     ``male``, ``female``
               (PAPILA 0 male/1 female, BRSET 1 male/2 female, Harvard
               ``gender``/``male`` 0 female/1 male)
age            ``rule=">"`` (MEDFAIR, FairDi: age > 60) or ``">="``          ``<=60``/``>60`` or
               (FairMedFM: age ≥ 60); threshold default 60                  ``<60``/``>=60``
age (5 bins)   MEDFAIR preset 0-19/20-39/40-59/60-79/80+                     ``0-19`` … ``80+``
race           canonical category (White, Black, Asian, Hispanic/Latino,     ``White``/``non-White``
               Native American, Pacific Islander, Other); unknown,           (FairDi, FairMedFM);
               declined, unable to obtain → <NA>. Schemes:                   ``Black``/``Asian or
               ``white_vs_nonwhite`` (every known non-White category),        White`` (FairTune)
               ``white_vs_black_asian`` (FairDi §7.1: only Black or Asian
               count as non-White; others <NA>), ``black_vs_asian_white``
               (FairTune; others <NA>), ``raw`` (the canonical category)
skin type      Fitzpatrick scale 1–6; MEDFAIR code = scale − 1; code ≤ 2 is  ``I-III``/``IV-VI``
               I–III, > 2 is IV–VI (FairDi's "0 to 2"); −1 unknown → <NA>
language       English vs non-English (FairMedFM D.1.2); ``raw`` scheme      ``English``/
               keeps English/Spanish/Other (Harvard codes 0/1/2, −1 unknown)  ``non-English``
marital status FairMedFM B.2 categories (Harvard codes 0–4, −1 unknown);     ``Married or
               ``binary`` scheme: married/partnered vs not                  Partnered`` …
ethnicity      Hispanic vs non-Hispanic (Harvard 0 non-Hispanic, 1 Hispanic) ``Hispanic``/
                                                                            ``non-Hispanic``
BMI            underweight < 18.5 ≤ normal < 25 ≤ overweight < 30 ≤ obese    ``underweight`` …
               (FairMedFM B.2, after Quetelet/WHO)                           ``obese``
handedness     right vs non-right (left or ambidextrous)                    ``right``/``non-right``
intersection   ``intersect(table, ["sex", "age"])``; <NA> if any part is     ``female & >60``
               unknown (FairTune App. A: age × sex → 4 groups); the
               attribute is named ``sex & age`` (``sex&age`` accepted)
============== ============================================================ ======================

Raw values stay in the table next to the ``group:<attr>`` columns (see :mod:`medequity.data.base`).
:func:`age_grouping` names the papers' age codings (``medfair``: > 60, ``fairmedfm``: ≥ 60,
``medfair_5bins``, or cut points); loaders take it as ``age_bins=`` and :func:`with_age_groups`
applies it to any loaded dataset (``medequity data card --age-bins``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medequity.data.base import GROUP_PREFIX
from medequity.metrics.groups import (
    INTERSECTION_SEP,
    canonical_attribute,
    intersection_name,
    is_intersection,
    split_intersection,
)

# Numeric code maps as the datasets document them (the "one coding": loaders use these constants).
PAPILA_SEX_CODES = {0: "male", 1: "female"}  # PAPILA clinical data: gender 0 male, 1 female
BRSET_SEX_CODES = {1: "male", 2: "female"}  # BRSET labels.csv: patient_sex 1 male, 2 female
HARVARD_SEX_CODES = {0: "female", 1: "male"}  # Harvard-GF/FairVLMed/FairSeg: 0 female, 1 male
HARVARD_RACE_CODES = {0: "Asian", 1: "Black", 2: "White"}
HARVARD_ETHNICITY_CODES = {0: "non-Hispanic", 1: "Hispanic"}  # -1 unknown → <NA>
HARVARD_LANGUAGE_CODES = {0: "English", 1: "Spanish", 2: "Other"}  # -1 unknown → <NA>
HARVARD_MARITAL_CODES = {
    0: "Married or Partnered",
    1: "Single",
    2: "Divorced",
    3: "Widowed",
    4: "Legally Separated",
}  # -1 unknown → <NA>

MEDFAIR_AGE_EDGES = (0, 20, 40, 60, 80)
MEDFAIR_AGE_LABELS = ("0-19", "20-39", "40-59", "60-79", "80+")

_UNKNOWN_WORDS = (
    "unknown",
    "unk",
    "unable",
    "declined",
    "refused",
    "not specified",
    "unspecified",
    "not reported",
    "n/a",
    "na",
    "nan",
    "none",
    "",
)


def _na_series(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype="string")


def _as_series(values: Any) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values)


def _is_unknown_text(text: str) -> bool:
    text = text.strip().lower()
    # The CHEXPERT DEMO table writes unknown race as "Unknown", "Race and Ethnicity Unknown",
    # "Patient Refused" and "Declines to State"; none of them is a race, so none may become "Other".
    return (
        text in _UNKNOWN_WORDS
        or "unknown" in text
        or "refused" in text
        or text.startswith(("unable", "patient declined", "declin"))
    )


def _map_codes(values: pd.Series, codes: Mapping[Any, str]) -> pd.Series:
    """Map raw codes (numbers or strings) through ``codes``; anything not in it becomes <NA>.

    Numeric codes read from CSV may arrive as 1.0 or "1"; both match the integer key 1.
    """
    lookup: dict[str, str] = {}
    for key, value in codes.items():
        lookup[_code_key(key)] = value

    def convert(raw: Any) -> Any:
        if raw is None or (not isinstance(raw, str) and pd.isna(raw)):
            return pd.NA
        return lookup.get(_code_key(raw), pd.NA)

    return pd.Series([convert(v) for v in values], index=values.index, dtype="string")


def _code_key(raw: Any) -> str:
    if isinstance(raw, (bool, np.bool_)):
        return str(int(raw))
    if isinstance(raw, (int, np.integer)):
        return str(int(raw))
    if isinstance(raw, (float, np.floating)):
        return str(int(raw)) if float(raw).is_integer() else str(raw)
    text = str(raw).strip()
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    return str(int(number)) if number.is_integer() else text


def _looks_numeric(values: pd.Series) -> bool:
    known = values.dropna()
    if known.empty:
        return False
    return bool(pd.to_numeric(known.astype(str), errors="coerce").notna().all())


# --- sex ------------------------------------------------------------------------------------------

_SEX_WORDS = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}


def sex_groups(values: Any, codes: Mapping[Any, str] | None = None) -> pd.Series:
    """``male`` / ``female`` from the dataset's own codes; anything else → <NA>.

    Text codes (``M``/``F``, ``Male``/``Female``, any case) are read directly. Numeric codes differ
    between datasets (PAPILA 0 = male, Harvard 0 = female), so they need an explicit ``codes``
    mapping such as :data:`PAPILA_SEX_CODES`; guessing would flip the groups of one dataset.
    """
    values = _as_series(values)
    if codes is not None:
        mapped = _map_codes(values, codes)
        return mapped.where(mapped.isin(["male", "female"]), pd.NA).astype("string")
    if _looks_numeric(values):
        raise ValueError(
            "sex values are numeric codes "
            f"{sorted(values.dropna().astype(str).unique().tolist())[:10]}; pass codes=, e.g. "
            "PAPILA_SEX_CODES {0: 'male', 1: 'female'} or HARVARD_SEX_CODES {0: 'female', 1: 'male'}"
        )
    lowered = values.astype("string").str.strip().str.lower()
    return lowered.map(lambda v: _SEX_WORDS.get(v, pd.NA) if isinstance(v, str) else pd.NA).astype("string")


# --- age ------------------------------------------------------------------------------------------


def _numeric(values: Any) -> pd.Series:
    values = _as_series(values)
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        # NIH's original table writes ages as "058Y"; keep the digits only.
        values = values.astype("string").str.strip().str.replace(r"[Yy]$", "", regex=True)
    return pd.to_numeric(values, errors="coerce").astype("Float64")


def age_groups(age: Any, threshold: float = 60, rule: str = ">") -> pd.Series:
    """Binary age groups with the side of the threshold made explicit.

    ``rule=">"`` (MEDFAIR, FairDi: "older than 60") gives ``<=60`` / ``>60``;
    ``rule=">="`` (FairMedFM: age ≥ 60) gives ``<60`` / ``>=60``. Missing or negative ages → <NA>.
    """
    if rule not in (">", ">="):
        raise ValueError(f"rule must be '>' or '>=', got {rule!r}")
    ages = _numeric(age)
    ages = ages.where(ages >= 0)
    t = _fmt_number(threshold)
    old = ages > threshold if rule == ">" else ages >= threshold
    young_label, old_label = (f"<={t}", f">{t}") if rule == ">" else (f"<{t}", f">={t}")
    out = pd.Series(np.where(old.fillna(False), old_label, young_label), index=ages.index, dtype="string")
    return out.where(ages.notna(), pd.NA)


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def cut_groups(values: Any, cuts: Sequence[float], labels: Sequence[str] | None = None) -> pd.Series:
    """Groups from user cut points, left-closed: cuts (40, 60) → ``<40``, ``40-<60``, ``>=60``."""
    numbers = _numeric(values)
    cuts = sorted(float(c) for c in cuts)
    if not cuts:
        raise ValueError("cut_groups needs at least one cut point")
    edges = [-np.inf, *cuts, np.inf]
    if labels is None:
        names = [_fmt_number(c) for c in cuts]
        labels = [f"<{names[0]}"] + [f"{a}-<{b}" for a, b in zip(names, names[1:])] + [f">={names[-1]}"]
    if len(labels) != len(edges) - 1:
        raise ValueError(f"{len(cuts)} cut points make {len(edges) - 1} groups; got {len(labels)} labels")
    binned = pd.cut(numbers.astype(float), bins=edges, right=False, labels=list(labels))
    return pd.Series(binned.astype(object), index=numbers.index).astype("string")


def age_bins_medfair(age: Any) -> pd.Series:
    """MEDFAIR's 5-bin age: 0-19 / 20-39 / 40-59 / 60-79 / 80+ (negative or missing → <NA>)."""
    ages = _numeric(age)
    ages = ages.where(ages >= 0)
    return cut_groups(ages, MEDFAIR_AGE_EDGES[1:], labels=list(MEDFAIR_AGE_LABELS)).where(ages.notna(), pd.NA)


def quantile_groups(values: Any, q: int = 4) -> pd.Series:
    """Equal-frequency bins labelled ``Q1 [lo, hi]`` … (ties may merge bins)."""
    numbers = _numeric(values).astype(float)
    binned, edges = pd.qcut(numbers, q=q, retbins=True, duplicates="drop")
    labels = [f"Q{i + 1} [{_fmt_number(round(lo, 2))}, {_fmt_number(round(hi, 2))}]" for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]
    codes = binned.cat.codes.to_numpy()
    out = pd.Series([labels[c] if c >= 0 else pd.NA for c in codes], index=numbers.index, dtype="string")
    return out


AGE_BINS = {
    "medfair": "MEDFAIR/FairDi: old if age > threshold (default 60): <=60 / >60",
    "fairmedfm": "FairMedFM: old if age >= threshold (default 60): <60 / >=60",
    "medfair_5bins": "MEDFAIR's 5 bins: 0-19 / 20-39 / 40-59 / 60-79 / 80+",
}


def age_grouping(bins: str | Sequence[float] | None = None, threshold: float = 60, rule: str = ">") -> dict[str, Any]:
    """The ``add_group_columns`` options for the ``age`` attribute, by name (:data:`AGE_BINS`).

    ``None`` or ``"binary"``: ``threshold`` and ``rule`` as given. ``"medfair"`` (MEDFAIR, FairDi:
    age > threshold), ``"fairmedfm"`` (FairMedFM: age ≥ threshold; it uses thresholds 50, 60, 75
    or 10 per dataset) and ``"medfair_5bins"`` (MEDFAIR's 0-19/…/80+) are the papers' codings;
    cut points (``[40, 60]`` or the text ``"40,60"`` from a command line) give left-closed bins.
    """
    if bins is None or bins == "binary":
        return {"kind": "age", "threshold": threshold, "rule": rule}
    if isinstance(bins, str):
        key = bins.strip().lower().replace("-", "_")
        if key == "medfair":
            return {"kind": "age", "threshold": threshold, "rule": ">"}
        if key == "fairmedfm":
            return {"kind": "age", "threshold": threshold, "rule": ">="}
        if key in ("medfair_5bins", "medfair5"):
            return {"kind": "age_bins"}
        try:
            cuts = [float(part) for part in key.split(",") if part.strip()]
        except ValueError:
            cuts = []
        if not cuts:
            raise ValueError(f"unknown age bins {bins!r}; choose one of {['binary', *AGE_BINS]} or cut points such as '40,60'")
        return {"kind": "cut", "cuts": cuts}
    cuts = [float(c) for c in bins]
    if not cuts:
        raise ValueError("age bins: give at least one cut point, e.g. [40, 60]")
    return {"kind": "cut", "cuts": cuts}


def describe_age_grouping(options: Mapping[str, Any]) -> str:
    """One line saying how ages became groups (for a dataset's ``info`` and its data card)."""
    if options["kind"] == "age_bins":
        return AGE_BINS["medfair_5bins"]
    if options["kind"] == "cut":
        return f"bins cut at {[_fmt_number(c) for c in options['cuts']]} (left-closed)"
    t = _fmt_number(options["threshold"])
    return f"old if age {options['rule']} {t}: " + (f"<={t} / >{t}" if options["rule"] == ">" else f"<{t} / >={t}")


def with_age_groups(dataset, bins: str | Sequence[float] | None, threshold: float = 60, rule: str = ">"):
    """``dataset`` with ``group:age`` recomputed from its raw ``age`` column by :func:`age_grouping`
    (a new dataset object; ``info["age_groups"]`` says which grouping). Works for any loader that
    keeps the raw age, so MEDFAIR's or FairMedFM's age coding can be chosen after loading."""
    from dataclasses import replace

    if "age" not in dataset.table.columns:
        raise KeyError(f"dataset {dataset.name!r} has no raw 'age' column to group; columns: {list(dataset.table.columns)}")
    options = age_grouping(bins, threshold, rule)
    table = add_group_columns(dataset.table, {"age": options})
    info = {**dataset.info, "age_groups": describe_age_grouping(options)}
    if "age_bins" in info.get("options", {}):  # a loader with age_bins: the same as loading with them
        info["options"] = {**info["options"], "age_bins": bins, "age_threshold": threshold, "age_rule": rule}
    return replace(dataset, table=table, info=info)


# --- race -----------------------------------------------------------------------------------------

RACE_SCHEMES = ("white_vs_nonwhite", "white_vs_black_asian", "black_vs_asian_white", "raw")


def canonical_race(value: Any) -> Any:
    """One canonical category for a raw race string (CheXpert DEMO, MIMIC-IV, user tables).

    "White, non-Hispanic" and "WHITE - OTHER EUROPEAN" are White; "Black or African American",
    "BLACK/CAPE VERDEAN" are Black; "Asian - Historical Conv" is Asian; unknown, declined and
    unable-to-obtain are <NA>.
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return pd.NA
    text = str(value).strip().lower()
    if _is_unknown_text(text):
        return pd.NA
    if text.startswith("white") or text == "caucasian":
        return "White"
    if text.startswith("black") or "african" in text:
        return "Black"
    if text.startswith("asian"):
        return "Asian"
    if text.startswith(("hispanic", "latino", "south american")):
        return "Hispanic/Latino"
    if "american indian" in text or "alaska" in text or text.startswith("native american"):
        return "Native American"
    if "pacific islander" in text or "hawaiian" in text:
        return "Pacific Islander"
    return "Other"  # "Other", "Other, Hispanic", "MULTIPLE RACE/ETHNICITY", "PORTUGUESE", ...


def race_groups(values: Any, scheme: str = "white_vs_nonwhite", codes: Mapping[Any, str] | None = None) -> pd.Series:
    """Race groups; see the module table for the schemes. ``codes`` maps numeric codes first."""
    if scheme not in RACE_SCHEMES:
        raise ValueError(f"unknown race scheme {scheme!r}; choose one of {RACE_SCHEMES}")
    values = _as_series(values)
    if codes is not None:
        values = _map_codes(values, codes)
    elif _looks_numeric(values):
        raise ValueError("race values are numeric codes; pass codes=, e.g. HARVARD_RACE_CODES {0: 'Asian', 1: 'Black', 2: 'White'}")
    # map each distinct value once: MIMIC-CXR has ~370k rows but a few dozen race strings
    raw = values.astype(object).where(values.notna(), None)  # None, unlike NaN, is a reliable dict key
    lookup = {v: canonical_race(v) for v in set(raw)}
    canonical = pd.Series([lookup[v] for v in raw], index=values.index, dtype="string")
    if scheme == "raw":
        return canonical
    if scheme == "white_vs_nonwhite":
        grouped = canonical.where(canonical == "White", "non-White")
    elif scheme == "white_vs_black_asian":
        grouped = canonical.map({"White": "White", "Black": "non-White", "Asian": "non-White"})
    else:  # black_vs_asian_white (FairTune)
        grouped = canonical.map({"Black": "Black", "Asian": "Asian or White", "White": "Asian or White"})
    return grouped.astype("string").where(canonical.notna(), pd.NA)


# --- skin type ------------------------------------------------------------------------------------


def medfair_skin_type(fitzpatrick_scale: Any) -> pd.Series:
    """MEDFAIR's 0-based skin-type code: ``fitzpatrick_scale − 1`` (scale 1–6); unknown → <NA>."""
    scale = _numeric(fitzpatrick_scale)
    valid = scale.isin([1, 2, 3, 4, 5, 6])
    return (scale - 1).where(valid, pd.NA).astype("Int64")


def skin_type_groups(fitzpatrick_scale: Any) -> pd.Series:
    """Fitzpatrick I–III vs IV–VI (MEDFAIR code ≤ 2 vs > 2; FairDi's "0 to 2"); −1 → <NA>."""
    code = medfair_skin_type(fitzpatrick_scale)
    out = pd.Series(np.where(code.fillna(-1) <= 2, "I-III", "IV-VI"), index=code.index, dtype="string")
    return out.where(code.notna(), pd.NA)


# --- language, marital status, ethnicity, BMI, handedness -----------------------------------------


def _categorical(values: Any, codes: Mapping[Any, str] | None, canonical: Callable[[str], Any]) -> pd.Series:
    values = _as_series(values)
    if codes is not None:
        return _map_codes(values, codes)
    out = []
    for v in values:
        if v is None or (not isinstance(v, str) and pd.isna(v)) or _is_unknown_text(str(v)):
            out.append(pd.NA)
        else:
            out.append(canonical(str(v).strip()))
    return pd.Series(out, index=values.index, dtype="string")


def language_groups(values: Any, scheme: str = "english_vs_other", codes: Mapping[Any, str] | None = None) -> pd.Series:
    """English vs non-English (FairMedFM D.1.2); ``scheme="raw"`` keeps English/Spanish/Other."""
    canonical = _categorical(values, codes, lambda t: {"english": "English", "spanish": "Spanish"}.get(t.lower(), "Other"))
    if scheme == "raw":
        return canonical
    if scheme != "english_vs_other":
        raise ValueError(f"unknown language scheme {scheme!r}; choose 'english_vs_other' or 'raw'")
    return canonical.where(canonical == "English", "non-English").where(canonical.notna(), pd.NA).astype("string")


_MARITAL_WORDS = {
    "married": "Married or Partnered",
    "partner": "Married or Partnered",
    "civil union": "Married or Partnered",
    "single": "Single",
    "divorced": "Divorced",
    "widow": "Widowed",
    "separated": "Legally Separated",
    "leg-sep": "Legally Separated",
}


def _canonical_marital(text: str) -> Any:
    lowered = text.lower()
    for word, category in _MARITAL_WORDS.items():
        if word in lowered:
            return category
    return "Other"


def marital_status_groups(values: Any, scheme: str = "categories", codes: Mapping[Any, str] | None = None) -> pd.Series:
    """FairMedFM B.2 categories; ``scheme="binary"``: ``Married or Partnered`` vs ``Not married``."""
    canonical = _categorical(values, codes, _canonical_marital)
    if scheme == "categories":
        return canonical
    if scheme != "binary":
        raise ValueError(f"unknown marital-status scheme {scheme!r}; choose 'categories' or 'binary'")
    married = canonical == "Married or Partnered"
    return canonical.where(married, "Not married").where(canonical.notna(), pd.NA).astype("string")


def ethnicity_groups(values: Any, codes: Mapping[Any, str] | None = None) -> pd.Series:
    """``Hispanic`` / ``non-Hispanic``; unknown → <NA>."""

    def canonical(text: str) -> Any:
        lowered = text.lower().replace("_", "-").replace(" ", "-")
        if lowered.startswith(("non-hispanic", "not-hispanic", "nonhispanic")):
            return "non-Hispanic"
        if "hispanic" in lowered or "latino" in lowered:
            return "Hispanic"
        return pd.NA

    return _categorical(values, codes, canonical)


BMI_LABELS = ("underweight", "normal", "overweight", "obese")


def bmi_groups(bmi: Any) -> pd.Series:
    """underweight < 18.5 ≤ normal < 25 ≤ overweight < 30 ≤ obese (FairMedFM B.2); ≤ 0 → <NA>."""
    numbers = _numeric(bmi)
    numbers = numbers.where(numbers > 0)
    return cut_groups(numbers, (18.5, 25, 30), labels=list(BMI_LABELS)).where(numbers.notna(), pd.NA)


def handedness_groups(values: Any, codes: Mapping[Any, str] | None = None) -> pd.Series:
    """``right`` vs ``non-right`` (left or ambidextrous); R/L/A and words accepted."""

    def canonical(text: str) -> Any:
        lowered = text.lower()
        if lowered in ("r", "right", "rh", "right-handed"):
            return "right"
        if lowered in ("l", "left", "lh", "left-handed", "a", "ambidextrous", "ambi", "mixed", "both"):
            return "non-right"
        return pd.NA

    return _categorical(values, codes, canonical)


def categorical_groups(values: Any, codes: Mapping[Any, str] | None = None) -> pd.Series:
    """Any other attribute (site, scanner, …): the raw value as text is the group; unknown → <NA>."""
    return _categorical(values, codes, lambda text: text)


# --- tables ---------------------------------------------------------------------------------------

GROUPERS: dict[str, Callable[..., pd.Series]] = {
    "sex": sex_groups,
    "age": age_groups,
    "age_bins": age_bins_medfair,
    "race": race_groups,
    "skin_type": skin_type_groups,
    "language": language_groups,
    "marital_status": marital_status_groups,
    "ethnicity": ethnicity_groups,
    "bmi": bmi_groups,
    "handedness": handedness_groups,
    "categorical": categorical_groups,
    "quantile": quantile_groups,
    "cut": cut_groups,
}
GROUPER_ALIASES = {
    "gender": "sex",
    "male": "sex",
    "fitzpatrick": "skin_type",
    "fitzpatrick_scale": "skin_type",
    "skin": "skin_type",
    "maritalstatus": "marital_status",
    "marital": "marital_status",
    "hispanic": "ethnicity",
    "handed": "handedness",
}


def grouper_for(kind: str) -> Callable[..., pd.Series]:
    """The grouping function for an attribute kind (``sex``, ``age``, …; aliases accepted)."""
    key = kind.lower().replace(" ", "_").replace("-", "_")
    key = GROUPER_ALIASES.get(key, key)
    if key not in GROUPERS:
        raise KeyError(f"unknown attribute kind {kind!r}; known: {sorted(GROUPERS)}")
    return GROUPERS[key]


def add_group_columns(
    table: pd.DataFrame,
    attributes: Iterable[str] | Mapping[str, Mapping[str, Any] | Callable[[pd.Series], pd.Series] | None],
    *,
    intersections: Iterable[Sequence[str]] = (),
) -> pd.DataFrame:
    """Return a copy of ``table`` with a ``group:<attr>`` column per attribute (raw columns kept).

    ``attributes`` names raw columns. As a list, each column's name picks its coding (``sex``,
    ``age``, ``race``, …; unknown names are grouped as plain categories). As a mapping, each value
    is a callable ``raw -> groups`` or a dict of options: ``kind`` (which coding; default the
    column name), ``column`` (the raw column, when it differs from the attribute name) and the
    coding's own keyword arguments, e.g. ``{"age": {"threshold": 65, "rule": ">="},
    "PatientSex": {"kind": "sex", "codes": {1: "male", 2: "female"}}}``.
    """
    out = table.copy()
    items = attributes.items() if isinstance(attributes, Mapping) else ((name, None) for name in attributes)
    for name, options in items:
        if callable(options):
            column, grouper, kwargs = name, options, {}
        else:
            kwargs = dict(options or {})
            column = kwargs.pop("column", name)
            kind = kwargs.pop("kind", None)
            grouper = grouper_for(kind) if kind is not None else _default_grouper(name)
        if column not in out.columns:
            raise KeyError(f"attribute column {column!r} not in table; columns: {list(out.columns)}")
        groups = grouper(out[column], **kwargs)
        out[GROUP_PREFIX + name] = pd.Series(groups, index=out.index).astype("string")
    for combo in intersections:  # ("sex", "age") or "sex & age" / "sex&age" → column "group:sex & age"
        parts = split_intersection(combo) if isinstance(combo, str) else tuple(combo)
        out[GROUP_PREFIX + intersection_name(parts)] = intersect(out, parts)
    return out


def _default_grouper(name: str) -> Callable[..., pd.Series]:
    try:
        return grouper_for(name)
    except KeyError:
        return categorical_groups


def with_intersections(dataset, names: Iterable[str]):
    """``dataset`` with a ``group:<name>`` column for each intersection ``name`` in ``names`` that it
    lacks (a new dataset object; the original is untouched). Both spellings name an intersection,
    ``"sex&age"`` and ``"sex & age"``; an intersection the dataset already has in either spelling
    is not added again, and a new column is named as the caller spelled it, so the caller finds it
    under that name (``attribute="sex&age"`` of a saved spec). Plain attribute names are left
    alone; an intersection of attributes the dataset does not have raises a KeyError naming the
    attributes it has. This lets any method train on intersectional groups (FairTune App. A:
    age × sex → 4 groups) by naming ``attribute="sex & age"``.
    """
    from dataclasses import replace

    missing: dict[str, str] = {}  # one new column per intersection, however often and spelled
    for name in names:
        if is_intersection(name) and not dataset.has_attribute(name):
            missing.setdefault(canonical_attribute(name), name)
    if not missing:
        return dataset
    table = dataset.table.copy()
    for name in missing.values():
        parts = split_intersection(name)
        unknown = [part for part in parts if part not in dataset.attributes]
        if unknown:
            raise KeyError(f"intersection {name!r}: dataset {dataset.name!r} has no attribute {unknown}; has {dataset.attributes}")
        table[GROUP_PREFIX + name] = intersect(table, parts)
    return replace(dataset, table=table)


def intersect(table: pd.DataFrame, attributes: Sequence[str]) -> pd.Series:
    """Intersectional groups, e.g. ``intersect(t, ["sex", "age"])`` → ``"female & >60"``.

    Reads ``group:<attr>`` columns (or a plain column of that name); a sample with any part
    unknown is <NA>, so it is excluded rather than forming a group of its own.
    """
    if len(attributes) < 2:
        raise ValueError(f"an intersection needs at least two attributes, got {list(attributes)}")
    parts = []
    for attr in attributes:
        column = GROUP_PREFIX + attr if GROUP_PREFIX + attr in table.columns else attr
        if column not in table.columns:
            raise KeyError(f"no column {GROUP_PREFIX + attr!r} or {attr!r}; columns: {list(table.columns)}")
        parts.append(table[column].astype("string"))
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + INTERSECTION_SEP + part  # <NA> propagates through string concatenation
    return joined.astype("string")
