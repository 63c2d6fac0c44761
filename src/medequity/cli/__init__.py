"""The ``medequity`` command line: it parses options and calls the library, nothing more."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from medequity import __version__
from medequity.cli.common import (
    BatchSizeOpt,
    CacheDirOpt,
    CheckpointOpt,
    DatasetOpt,
    DatasetOptionsOpt,
    ModelOptionsOpt,
    RootOpt,
    command_group,
    console,
    experiment_spec,
    fail,
    parse_options,
    progress_bar,
)

app = command_group("Measure and mitigate demographic bias in medical image analysis.", name="medequity")
data_app = command_group("Datasets: data cards, synthetic data.")
app.add_typer(data_app, name="data")


def _register_subcommands() -> None:
    from medequity.cli.bench import bench_app

    app.add_typer(bench_app, name="bench")
    from medequity.cli.fairdi import fairdi_app
    from medequity.cli.fairtune import fairtune_app

    app.add_typer(fairtune_app, name="fairtune")
    app.add_typer(fairdi_app, name="fairdi")
    from medequity.cli.validate import validate_app

    app.add_typer(validate_app, name="validate")
    from medequity.cli.models import models_app

    app.add_typer(models_app, name="models")


_register_subcommands()


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        console.print(f"medequity {__version__}")
        raise typer.Exit()


@app.command("audit")
def audit_command(
    predictions: Annotated[Path | None, typer.Argument(help="CSV or Parquet of predictions: label, score(s), group columns.")] = None,
    example: Annotated[bool, typer.Option(
        "--example", help="Audit the built-in simulated cohort (a classifier with known biases).")] = False,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for report.html, report.json, groups.csv, gaps.csv (an earlier report there is "
        "replaced as a whole).")] = Path("reports/audit"),
    metadata: Annotated[Path | None, typer.Option(help="Metadata table joined on --id (CSV/Parquet).")] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="Id column shared by predictions and metadata.")] = None,
    label: Annotated[list[str] | None, typer.Option(
        help="Label column (detected if omitted); repeat for a multi-label table, one task per finding.")] = None,
    score: Annotated[list[str] | None, typer.Option(
        help="Score column; repeat for per-class scores, or one per --label in the same order.")] = None,
    score_prefix: Annotated[str | None, typer.Option(help="Per-class score columns share this prefix, e.g. 'p_' for p_mel, p_nv.")] = None,
    scores: Annotated[str, typer.Option(
        "--scores", help="What the scores are: 'auto' (probabilities if all in [0, 1], else real-valued: AUC and "
        "thresholds, no calibration), 'probability', or 'logit' (a sigmoid is applied).")] = "auto",
    prediction: Annotated[str | None, typer.Option(
        help="Hard-prediction column: the model's own decisions (threshold metrics use it, AUC the score).")] = None,
    positive_label: Annotated[str | None, typer.Option(help="Label value of the positive class when labels are not 0/1.")] = None,
    attribute: Annotated[list[str] | None, typer.Option("--attribute", "-a", help="Sensitive attribute column (repeat).")] = None,
    bin_rule: Annotated[list[str] | None, typer.Option(
        "--bin", help="Bin a continuous attribute: 'age=>60', 'age=>=60', 'age=40,60,80', 'age=q4'.")] = None,
    intersect: Annotated[list[str] | None, typer.Option(
        help="Intersection to audit, e.g. 'sex,age' (repeat); 'all' for every pair.")] = None,
    keep_unknown: Annotated[bool, typer.Option(
        "--keep-unknown", help="Keep values such as 'Unknown' or 'Declines to state' as groups (default: missing, "
        "excluded and counted).")] = False,
    threshold: Annotated[str | None, typer.Option(
        help="Decision threshold: a number, 'best_f1' or 'youden' (default 0.5; 0 for real-valued scores).")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation predictions: threshold rules are fitted there (honest).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for CIs (0 = none).")] = 1000,
    n_permutations: Annotated[int, typer.Option(
        help="Also a permutation test of max - min = 0 with this many permutations (0 = none; the gap's "
        "p-value is the bootstrap min-P test of each group vs all samples either way).")] = 0,
    ci: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    per_attribute_bootstrap: Annotated[bool, typer.Option(
        "--per-attribute-bootstrap",
        help="Resample each attribute on its own (group x label strata) instead of one shared set of replicates "
        "(cells of all attributes x label): exact for every attribute, about 2x slower; the shared set holds each "
        "group's mix of the other attributes fixed, which narrows a coarse attribute's SEs by ~2-6%.")] = False,
    min_group_size: Annotated[int, typer.Option(help="Groups with fewer samples, positives or negatives are flagged.")] = 30,
    missing: Annotated[str, typer.Option(help="Missing attribute values: 'drop' (counted) or 'category'.")] = "drop",
    seed: Annotated[int, typer.Option(help="Random seed of bootstrap and permutations.")] = 0,
    html: Annotated[bool, typer.Option(help="Write report.html.")] = True,
    audit_task: Annotated[list[str] | None, typer.Option(
        "--task", help="'classification' (default), 'segmentation' (mask paths or per-sample Dice), or LABEL=SCORE: "
        "one finding of a multi-label table (repeat).")] = None,
    root: Annotated[Path | None, typer.Option(help="Segmentation: folder the mask paths are relative to (default: the table's).")] = None,
    truth: Annotated[str | None, typer.Option(help="Segmentation: ground-truth mask path column (detected if omitted).")] = None,
    dice: Annotated[str | None, typer.Option(help="Segmentation: per-sample Dice column, instead of --prediction masks.")] = None,
    spacing: Annotated[str | None, typer.Option(
        help="Segmentation: voxel spacing, one number or one per axis ('1,1,2.5'); default NIfTI header, else 1.")] = None,
    tolerance: Annotated[float, typer.Option(help="Segmentation: NSD tolerance in physical units.")] = 1.0,
    mask_values: Annotated[str | None, typer.Option(
        help="Segmentation: 'binary' (any value > 0 is the object, e.g. 0/255 PNGs); default: stored values are classes.")] = None,
) -> None:
    """Audit a model's predictions: per-group metrics with CIs, gaps with tests, ADF, plots."""
    from medequity.audit import AuditInputError, audit
    from medequity.cli.terminal import print_audit_summary
    from medequity.utils.io import check_output_directory

    kinds = [t for t in audit_task or [] if "=" not in t]
    pairs = [t for t in audit_task or [] if "=" in t]
    if any(kind not in ("classification", "segmentation") for kind in kinds) or len(set(kinds)) > 1:
        fail(f"--task must be 'classification', 'segmentation' or a LABEL=SCORE pair; got {', '.join(kinds)}")
    try:
        check_output_directory(out)
    except NotADirectoryError as exc:
        fail(f"--out {exc}")
    if kinds == ["segmentation"]:
        if pairs:
            fail("--task LABEL=SCORE pairs are classification findings; a segmentation audit takes mask columns")
        _audit_segmentation(predictions, example=example, out=out, metadata=metadata, id_column=id_column, root=root,
                            truth=truth, prediction=prediction, dice=dice, attribute=attribute, bin_rule=bin_rule,
                            spacing=spacing, tolerance=tolerance, mask_values=mask_values, n_boot=n_boot,
                            n_permutations=n_permutations, ci=ci, min_group_size=min_group_size, missing=missing,
                            seed=seed, html=html)
        return
    if example:
        from medequity.audit.example import simulated_cohort

        predictions, metadata = simulated_cohort()
        id_column, attribute = "sample_id", attribute or ["sex", "age", "race", "site"]
        bin_rule, intersect = bin_rule or ["age=>60"], intersect or ["sex,age"]
        console.print("auditing the built-in example: weaker signal in women (sex), prevalence rising with age, "
                      "under-scoring of Black patients (race); 'site' is an unbiased control")
    elif predictions is None:
        fail("give a predictions table (CSV/Parquet), or --example for the built-in one")
    intersections: list | bool = False
    if intersect:
        intersections = True if intersect == ["all"] else [tuple(x.split(",")) for x in intersect]
    positive = _coerce_label(positive_label)
    try:
        with _progress_when_started() as on_progress:
            report = audit(
                predictions, metadata=metadata, id_column=id_column, label=label or None,
                score=score if score else None, score_prefix=score_prefix, prediction=prediction,
                positive_label=positive, attributes=attribute or None, bins=bin_rule or None,
                intersections=intersections, pairs=pairs or None, score_type=scores, keep_unknown=keep_unknown,
                threshold=threshold, validation=validation, n_boot=n_boot, n_permutations=n_permutations, ci=ci,
                min_group_size=min_group_size, missing=missing, random_state=seed, progress=on_progress,
                shared_bootstrap=not per_attribute_bootstrap,
            )
    except (AuditInputError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    try:
        paths = report.save(out, html=html)
    except OSError as exc:
        fail(f"could not write the report into {out} ({exc}); nothing was written there — check the folder and its permissions")
    print_audit_summary(report, console)
    for kind, path in paths.items():
        console.print(f"[green]wrote[/] {kind:6s} {path}", soft_wrap=True)


@contextmanager
def _progress_when_started() -> Iterator[Callable[[int, int, str], None]]:
    """A ``progress(done, total, what)`` callback whose bar appears at its first call: the audit
    calls it once every input is checked, so an input error prints no empty "0/?" bar first."""
    state: dict = {}

    def update(done: int, total: int, what: str) -> None:
        if "bar" not in state:
            state["bar"] = progress_bar()
            state["bar"].start()
            state["task"] = state["bar"].add_task(what, total=total)
        state["bar"].update(state["task"], completed=done, total=total, description=what)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].stop()


def _audit_segmentation(table: Path | None, *, example: bool, out: Path, root: Path | None, spacing: str | None,
                        attribute: list[str] | None, bin_rule: list[str] | None, seed: int, html: bool, **options) -> None:
    """``medequity audit --task segmentation``: parse, call :func:`audit_segmentation`, print, write."""
    import tempfile

    from medequity.audit import AuditInputError, audit_segmentation, segmentation_example_table

    spacing_value = None
    if spacing:
        try:
            numbers = [float(x) for x in spacing.split(",") if x.strip()]
        except ValueError:
            fail(f"--spacing {spacing!r}: give one number or one per axis, e.g. '1,1,2.5'")
        spacing_value = numbers[0] if len(numbers) == 1 else numbers
    with tempfile.TemporaryDirectory(prefix="medequity-seg-example-") as scratch:
        source: Path | None = table
        if example:
            console.print("auditing the built-in segmentation example: synthetic skin lesions (seg-derm-contrast) whose "
                          "contrast is 35% lower on skin types IV-VI; the model sees only the visible lesion, so its Dice "
                          "is lower there (skin_tone); 'sex' is an unbiased control")
            segmentation_example_table(scratch, n=400, seed=0)
            source, root = Path(scratch) / "segmentation.csv", Path(scratch)
            attribute = attribute or ["skin_tone", "sex"]
            options.update(mask_values=options.get("mask_values") or "binary", id_column="image_id")
        elif table is None:
            fail("give a segmentation table (CSV/Parquet), or --example for the built-in one")
        assert source is not None
        try:
            with _progress_when_started() as on_progress:
                report = audit_segmentation(
                    source, root=root, id_column=options["id_column"], truth_column=options["truth"],
                    prediction_column=options["prediction"], dice_column=options["dice"], attributes=attribute or None,
                    metadata=options["metadata"], bins=bin_rule or None, spacing=spacing_value, tolerance=options["tolerance"],
                    mask_values=options["mask_values"], n_boot=options["n_boot"], n_permutations=options["n_permutations"],
                    ci=options["ci"], min_group_size=options["min_group_size"], missing=options["missing"], random_state=seed,
                    progress=on_progress,
                )
        except (AuditInputError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
    try:
        paths = report.save(out, html=html)
    except OSError as exc:
        fail(f"could not write the report into {out} ({exc}); nothing was written there — check the folder and its permissions")
    console.print(f"[bold]Segmentation fairness audit[/] — {report.settings['n_samples']} samples, "
                  f"metrics {', '.join(report.metrics)}")
    for row in report.headline().to_dict(orient="records"):
        parts = [f"[bold]{row['attribute']}[/] ({row['groups']} groups, worst: {row['worst group']})"]
        for key in ("Dice", "worst Dice", "Dice Δ", "DSC_ES", "ES-Dice"):
            if isinstance(row.get(key), tuple):
                value, low, high, p = row[key]
                text = f"{key} {value:.3f} [{low:.3f}, {high:.3f}]"
                parts.append(text + (f" p={p:.2g}" if p == p else ""))
        console.print("  " + " · ".join(parts), soft_wrap=True)
    from rich.markup import escape

    for finding in report.findings().itertuples(index=False):
        if finding.metric == "dice" or finding.significant:
            mark = "[bold red]![/]" if finding.significant else "·"
            console.print(f"{mark} [bold]{escape(str(finding.attribute))}[/] — {finding.metric}: {escape(finding.sentence)}")
    for kind, path in paths.items():
        console.print(f"[green]wrote[/] {kind:7s} {path}", soft_wrap=True)


def _coerce_label(value: str | None):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


#: The specs `medequity demo` runs, in order: (package spec file, results sub-folder of --out or "" for --out itself)
DEMO_SPECS = (("demo.yaml", ""), ("seg-demo.yaml", "segmentation"))


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder (rerunning into it resumes).")] = Path("reports/demo"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs at a time (local processes).")] = 1,
) -> None:
    """Run the default benchmarks on synthetic data with known biases (classification, then
    segmentation), print their leaderboards, write a report for each."""
    from importlib.resources import files

    from medequity.bench.report import write_bench_report
    from medequity.cli.bench import run_command
    from medequity.utils.safe_yaml import load_yaml

    specs = [Path(str(files("medequity.bench") / "specs")) / name for name, _ in DEMO_SPECS]  # an absolute name (a test) is kept
    console.print("[bold]medequity demo[/]: a classification and a segmentation benchmark on synthetic data with known "
                  "biases, each with its report.", soft_wrap=True)
    for number, spec in enumerate(specs, start=1):
        raw = load_yaml(spec.read_text(encoding="utf-8"))  # the spec's own description: the intro never goes stale
        task = str(raw.get("task", "classification")).capitalize()
        console.print(f"{number}. {task}: {' '.join(str(raw.get('description', raw.get('name', ''))).split())}", soft_wrap=True)
    reports = []
    for spec, (_, folder) in zip(specs, DEMO_SPECS, strict=True):
        results = out / folder if folder else out
        console.print(f"\nspec: {spec}", soft_wrap=True)
        run_command(spec=spec, out=results, ray=None, jobs=jobs)
        reports.append(write_bench_report(results))
    console.print("\n[bold green]reports:[/]", soft_wrap=True)
    for spec, path in zip(specs, reports, strict=True):
        console.print(f"  {spec.stem:14s} {path.resolve()}", soft_wrap=True)


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the model, predictions and report.")] = Path("runs/train"),
    dataset: DatasetOpt = "synthetic",
    root: RootOpt = None,
    option: DatasetOptionsOpt = None,
    attribute: Annotated[str, typer.Option(help="Sensitive attribute the method mitigates ('sex&age': an intersection).")] = "sex",
    model: Annotated[str, typer.Option(help="Backbone: small_cnn, a timm name, open_clip:<name>.")] = "small_cnn",
    model_option: ModelOptionsOpt = None,
    checkpoint: CheckpointOpt = None,
    usage: Annotated[str, typer.Option(help="lp, ft, lora, bitfit, ln, attn, mask, clip_zs, clip_adapt.")] = "ft",
    method: Annotated[str, typer.Option(help="Mitigation method (erm, resampling, groupdro, ...).")] = "erm",
    param: Annotated[list[str] | None, typer.Option("--param", help="Method hyper-parameter key=value (repeat).")] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 20,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2.5e-4,
    batch_size: BatchSizeOpt = 128,
    selection: Annotated[str, typer.Option(
        help="Validation criterion: worst_group_auc, auc, es_auc, neg_loss, or last (keep the final epoch).")] = "worst_group_auc",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for the test report.")] = 500,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Train one model with one mitigation method; save it with its predictions and fairness report."""
    from medequity.experiment import run_experiment, save_run
    from medequity.experiment.validation import validate_spec
    from medequity.methods import METHODS
    from medequity.training.trainer import Trainer

    if method not in METHODS:
        fail(f"unknown method {method!r}; known: {', '.join(METHODS.names())}")
    spec = experiment_spec(
        dataset=dataset, root=root, option=option, model=model, model_option=model_option, checkpoint=checkpoint,
        attribute=attribute, usage=usage, method=method, method_params=parse_options(param), seed=seed,
        train={"epochs": epochs, "lr": lr, "batch_size": batch_size, "selection": selection},
        n_boot=n_boot, n_permutations=0, cache_dir=str(cache_dir) if cache_dir else None,
    )
    try:
        validate_spec(spec)  # every setting, before any data is loaded or pre-trained
    except ValueError as exc:
        fail(str(exc))
    total = _planned_epochs(method, spec.method_params, spec.train)
    with progress_bar() as bar:
        task = bar.add_task("training", total=total)
        # Multi-stage methods (fair_diagnosis: classifier, jsd, adversarial) count every stage's
        # epochs; a stage that stops early leaves its unused epochs behind.
        done_before: dict[str, int] = {}
        done = [0]

        def on_epoch(info: dict) -> None:
            stage = info.get("stage") or method
            done_before.setdefault(stage, done[0])
            done[0] = min(total, done_before[stage] + info["epoch"] + 1)
            bar.update(task, completed=done[0], description=(
                f"{stage} epoch {info['epoch'] + 1}: loss {info['train_loss']:.3f}, "
                f"val {info['selection']} {info.get('val_' + info['selection'], info['val_auc']):.3f}"))

        try:
            result = run_experiment(spec, trainer=Trainer(progress=on_epoch))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            fail(str(exc))
    paths = save_run(result, out)
    console.print(f"best epoch {result.best_epoch + 1}, threshold {result.threshold['value']:.3f} "
                  f"({result.threshold['rule']} on the {result.threshold['fitted_on']}), {result.seconds:.0f} s")
    for kind, path in paths.items():
        console.print(f"[green]wrote[/] {kind:16s} {path}", soft_wrap=True)
    _print_test_metrics(result)


def _planned_epochs(method: str, params: dict, train: dict) -> int:
    from medequity.methods import create_method
    from medequity.training.trainer import TrainConfig

    return create_method(method, **params).planned_epochs(TrainConfig(**train))


def _print_test_metrics(result) -> None:
    """The run's test metrics on its training attribute: the headline metric (AUC; Dice for
    segmentation) per group with its CI, the decision rates, and the gap, worst group and
    equity-scaled summary (FairMedFM ES-AUC / FairSeg ES-Dice)."""
    from rich.table import Table

    from medequity.bench.store import headline

    head = headline(result.spec.task)
    metrics, summaries = result.metrics, result.summaries
    attribute = result.spec.attribute if (metrics.attribute == result.spec.attribute).any() else metrics.attribute.iloc[0]
    rows = metrics[metrics.attribute == attribute]
    shown = [m for m in (head.metric, "acc", "tpr", "fpr") if (rows.metric == m).any()]
    table = Table(title=f"test metrics by {attribute} ({head.metric} with its 95% CI)", title_justify="left")
    table.add_column("group")
    table.add_column("n", justify="right")
    for metric in shown:
        table.add_column(metric, justify="right")
    for group in rows.group.drop_duplicates():
        cells = rows[rows.group == group].set_index("metric")
        n = cells["n"].iloc[0]
        table.add_row(str(group), "" if n != n else str(int(n)),
                      *(_with_ci(cells.loc[m], ci=m == head.metric) if m in cells.index else "" for m in shown))
    console.print(table)
    summary = summaries[(summaries.attribute == attribute) & (summaries.metric == head.metric)].set_index("summary")
    parts = []
    for key, label in (("gap", f"{head.metric} gap"), ("worst", "worst group"), (head.es_summary, head.columns[3])):
        if key in summary.index:
            row = summary.loc[key]
            p = row.get("p_value")
            parts.append(f"{label} {_with_ci(row)}" + (f" (p = {p:.3g})" if key == "gap" and p == p and p is not None else ""))
    if parts:
        console.print(", ".join(parts), soft_wrap=True)


def _with_ci(row, *, ci: bool = True) -> str:
    value, low, high = row["value"], row.get("ci_low"), row.get("ci_high")
    if value != value:  # NaN: not measurable (a group with one class)
        return "n/a"
    if not ci or low is None or high is None or low != low or high != high:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


@data_app.command("card")
def data_card_command(
    dataset: Annotated[str, typer.Argument(help="Registered dataset name (e.g. ham10000, synthetic, table).")],
    root: Annotated[Path | None, typer.Option(help="Dataset folder as distributed.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Loader option key=value (repeat), e.g. preset=cxr-sex-prevalence.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for card.json and card.csv.")] = None,
    age_bins: Annotated[str | None, typer.Option(
        "--age-bins", help="Age groups: medfair (age > 60, MEDFAIR/FairDi), fairmedfm (age >= 60), "
        "medfair_5bins (0-19/20-39/40-59/60-79/80+) or cut points such as 40,60.")] = None,
    age_threshold: Annotated[float, typer.Option(help="Threshold of --age-bins medfair/fairmedfm.")] = 60,
) -> None:
    """Print (and write) a dataset's data card: what label 1 means, group sizes, prevalence per group,
    skew, missing values, the loader's options and the rows it dropped.

    Real chest X-ray tables take options such as --option views=PA, --option one_per_patient=true,
    --option uncertain=missing (CheXpert), --option check_files=false (NIH: the CSV alone)."""
    from medequity.data import DATASETS, create_dataset
    from medequity.data.attributes import with_age_groups
    from medequity.data.card import build_data_card

    kwargs = parse_options(option)
    try:
        ds = create_dataset(dataset, root, **kwargs)
        if age_bins is not None:
            ds = with_age_groups(ds, age_bins, age_threshold)
    except KeyError as exc:
        if dataset not in DATASETS:
            fail(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS.names())}")
        fail(str(exc.args[0]) if exc.args else str(exc))
    except TypeError as exc:
        import inspect

        accepted = [p for p in inspect.signature(DATASETS.get(dataset)).parameters if p != "root"]
        fail(f"{exc}; {dataset} takes the options: {', '.join(accepted)}")
    except ValueError as exc:
        fail(str(exc))
    from rich.markdown import Markdown

    card = build_data_card(ds)
    console.print(Markdown(card.to_markdown()))
    if out is not None:
        for path in card.save(out):
            console.print(f"[green]wrote[/] {path}", soft_wrap=True)


if __name__ == "__main__":
    app()
