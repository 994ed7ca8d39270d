"""Reading study files: TOML -> validated `repro.study.spec` dataclasses, one-line errors.

`repro list --study FILE` loads any study file; `--profile NAME` one of repro/study/studies/.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.study.methods import PRUNING_METHODS, UNSTRUCTURED, known_methods
from repro.study.spec import (
    REPLICATE_SEED_STRIDE,
    DataSpec,
    ModelSpec,
    PretrainedSae,
    Run,
    SaeSpec,
    StreamSpec,
    Study,
    TextSource,
    Variant,
    VerdictSpec,
    _need,
)

PROFILES_DIR = Path(__file__).resolve().parent / "studies"


def _check_keys(
    table: dict[str, Any], cls: type | None, where: str, extra: tuple[str, ...] = ()
) -> None:
    allowed = {f.name for f in fields(cls) if f.name != "key"} if cls else set()
    allowed |= set(extra)
    unknown = sorted(set(table) - allowed)
    _need(
        not unknown,
        where,
        f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
    )


_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _build(cls: type, table: Any, where: str, **fixed: Any) -> Any:
    """Construct a spec dataclass from a TOML table, checking keys and scalar types first."""
    _need(isinstance(table, dict), where, "must be a table")
    _check_keys(table, cls, where)
    for f in fields(cls):
        expected = _SCALARS.get(str(f.type))
        value = table.get(f.name)
        if expected and value is not None:
            ok = isinstance(value, expected) and (bool in expected or not isinstance(value, bool))
            _need(ok, where, f"{f.name} must be {f.type}, got {value!r}")
    try:
        return cls(**table, **fixed)
    except TypeError as exc:  # a missing field
        raise ReproError(f"study file: {where}: {exc}") from None


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _resolve(path: str, base: Path, where: str = "") -> str:
    """Local paths are relative to the study file (with or without ./); a path that names no
    folder there is a Hub id, and must look like one (org/name); packaged sources stay."""
    if path.startswith((".", "/", "~")):
        return str((base / Path(path).expanduser()).resolve())
    if path.startswith("package:") or not where:
        return path
    if (base / path).exists():
        return str((base / path).resolve())
    _need(bool(HUB_ID.fullmatch(path)) and not path.endswith((".", "-")), where,
          f"{path!r} is neither a folder (relative to the study file, {base}) nor a Hugging "
          "Face Hub id (org/name); fix the path")
    return path


def _model(key: str, table: dict[str, Any], base: Path) -> ModelSpec:
    where = f"models.{key}"
    _need(isinstance(table, dict), where, "must be a table")
    table = dict(table)
    sae = table.pop("pretrained_sae", None)
    if sae is not None:
        sae = _build(PretrainedSae, sae, f"{where}.pretrained_sae")
        if sae.path:
            sae = PretrainedSae(path=_resolve(sae.path, base))
    if "source" in table:
        table["source"] = _resolve(str(table["source"]), base, f"{where}.source")
    return _build(ModelSpec, table, where, key=key, pretrained_sae=sae)


def _stream(table: Any, where: str, base: Path) -> StreamSpec:
    _need(isinstance(table, dict), where, "must be a table")
    table = dict(table)
    source = _build(TextSource, table.pop("source", None), f"{where}.source")
    if source.path.startswith((".", "/")):
        source = TextSource(**{**source.__dict__, "path": _resolve(source.path, base)})
    return _build(StreamSpec, table, where, source=source)


def _runs(raw: dict[str, Any], models: dict[str, ModelSpec], seed: int) -> tuple[Run, ...]:
    grid = raw.get("conditions", [])
    _need(isinstance(grid, list) and grid, "conditions", "needs at least one [[conditions]] entry")
    variants: list[Variant] = []
    for i, entry in enumerate(grid):
        where = f"conditions[{i}]"
        _need(isinstance(entry, dict), where, "must be a table")
        _check_keys(entry, None, where, extra=("model", "methods", "sparsities", "patterns"))
        model = entry.get("model")
        _need(model in models, where, f"model {model!r} is not among [models]: {', '.join(models)}")
        methods, sparsities = entry.get("methods", []), entry.get("sparsities", [])
        patterns = entry.get("patterns", [UNSTRUCTURED])
        _need(isinstance(methods, list) and methods, where, "methods must be a non-empty list")
        _need(
            isinstance(sparsities, list) and sparsities,
            where,
            "sparsities must be a non-empty list",
        )
        _need(isinstance(patterns, list) and patterns, where,
              f"patterns must be a non-empty list (e.g. [\"{UNSTRUCTURED}\", \"2:4\"])")
        for method in methods:
            _need(method in PRUNING_METHODS, where,
                  f"method {method!r} is not known; use one of {known_methods()}")
            for s in sparsities:
                _need(
                    isinstance(s, int | float) and not isinstance(s, bool),
                    where,
                    f"sparsity {s!r} is not a number",
                )
                _need(0.0 < s < 1.0, where, f"sparsity {s} is outside (0, 1); write 0.5 for 50 %")
                variants += [Variant(model, method, float(s), pattern) for pattern in patterns]
    runs = [Run(Variant(m, "dense", 0.0), seed) for m in models]
    runs += [Run(v, seed) for v in variants]
    for i, entry in enumerate(raw.get("extra_seeds", [])):
        where = f"extra_seeds[{i}]"
        _check_keys(entry, None, where, extra=("model", "seeds"))
        model, seeds = entry.get("model"), entry.get("seeds", [])
        _need(model in models, where, f"model {model!r} is not among [models]")
        _need(
            isinstance(seeds, list) and all(isinstance(s, int) for s in seeds),
            where,
            "seeds must be a list of integers",
        )
        _need(seed not in seeds, where, f"seed {seed} is the study's base seed; pick others")
        runs += [Run(Variant(model, "dense", 0.0), s, is_extra_seed=True) for s in seeds]
    return tuple(runs)


def _controls(runs: tuple[Run, ...], sae: SaeSpec) -> tuple[Run, ...]:
    """One control-seed run per variant, when the study declares a control_seed."""
    if sae.control_seed is None:
        return runs
    seeds = {r.seed for r in runs}
    _need(sae.control_seed not in seeds, "sae",
          f"control_seed {sae.control_seed} is already a seed of the study; pick another")
    variants = dict.fromkeys(r.variant for r in runs)
    return runs + tuple(Run(v, sae.control_seed, is_control=True) for v in variants)


def _replicates(runs: tuple[Run, ...], verdict: VerdictSpec) -> tuple[Run, ...]:
    """Every run again in each further replicate, from seeds no base run uses."""
    if verdict.replicates > 1:
        wide = sorted({r.seed for r in runs if not 0 <= r.seed < REPLICATE_SEED_STRIDE})
        _need(not wide, "verdict", f"seeds {wide} would collide with replicate seeds (seed + "
              f"r * {REPLICATE_SEED_STRIDE}); with replicates, keep every seed in "
              f"[0, {REPLICATE_SEED_STRIDE})")
    return runs + tuple(r.replicated(i) for i in range(1, verdict.replicates) for r in runs)


def load_study(path: Path) -> Study:
    """Read and validate a study file; every problem is a one-line ReproError."""
    path = Path(path)
    if not path.is_file():
        raise ReproError(f"study file {path} does not exist; give an existing TOML file to --study")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ReproError(f"study file {path} is not valid TOML ({exc}); fix the syntax") from None
    base = path.resolve().parent
    _check_keys(
        raw,
        None,
        "top level",
        extra=("study", "models", "conditions", "extra_seeds", "sae", "thresholds", "data",
               "verdict"),
    )
    head = raw.get("study", {})
    _need(isinstance(head, dict), "study", "must be a table")
    _check_keys(head, None, "study", extra=("name", "device", "dtype", "seed", "description"))
    models_raw = raw.get("models", {})
    _need(isinstance(models_raw, dict) and models_raw, "models", "needs at least one [models.KEY]")
    models = {key: _model(key, table, base) for key, table in models_raw.items()}
    data_raw = raw.get("data", {})
    _need(isinstance(data_raw, dict), "data", "must be a table")
    _check_keys(data_raw, DataSpec, "data")
    data = DataSpec(
        **{f.name: _stream(data_raw.get(f.name), f"data.{f.name}", base) for f in fields(DataSpec)}
    )
    seed = head.get("seed", 0)
    _need(isinstance(seed, int), "study", f"seed must be an integer, got {seed!r}")
    thresholds = _thresholds(raw.get("thresholds", {}))
    sae = _build(SaeSpec, raw.get("sae"), "sae")
    verdict = _build(VerdictSpec, raw.get("verdict", {}), "verdict")
    return Study(
        name=str(head.get("name", path.stem)),
        path=path.resolve(),
        device=head.get("device", "cpu"),
        dtype=head.get("dtype", "float32"),
        seed=seed,
        models=models,
        data=data,
        sae=sae,
        runs=_replicates(_controls(_runs(raw, models, seed), sae), verdict),
        thresholds=thresholds,
        verdict=verdict,
    )


THRESHOLDS = {
    # name: (lowest, highest, whole number, what it is)
    "viable_ce_score": (-math.inf, 1.0, False, "the CE-loss score an SAE must reach (RQ3)"),
    "fragile_r": (-1.0, 1.0, False, "the Pearson r below which a feature is fragile (RQ4)"),
    "frequency_bins": (2, 100, True, "firing-rate bins (RQ2, RQ5)"),
    "causal_features_per_bin": (1, 10_000, True, "features ablated per bin (RQ5)"),
    "causal_sequences": (0, 10**6, True, "eval sequences of the ablations, 0 for all (RQ5)"),
    "sanity_l0_rel": (0.0, math.inf, False, "the shipped SAEs' L0 band (sanity gate)"),
    "sanity_ev_abs": (0.0, 1.0, False, "the shipped SAEs' EV band (sanity gate)"),
    "curve_flat_ev_gain": (0.0, 1.0, False, "the EV an SAE may still gain over its last "
                           "quarter of training and count as trained enough (report warning)"),
}


def _thresholds(table: Any) -> dict[str, float]:
    """[thresholds], each key known and each value a number in its range."""
    _need(isinstance(table, dict), "thresholds", "must be a table of name = number")
    out = {}
    for key, value in table.items():
        where = f"thresholds.{key}"
        _need(key in THRESHOLDS, where, f"unknown threshold; use one of {', '.join(THRESHOLDS)}")
        low, high, whole, what = THRESHOLDS[key]
        _need(isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value) and (not whole or float(value).is_integer()), where,
              f"must be a {'whole ' if whole else ''}number ({what}), got {value!r}")
        _need(low <= value <= high, where, f"must be in [{low}, {high}] ({what}), got {value!r}")
        out[key] = float(value)
    return out


def profile_path(profile: str) -> Path:
    """The study file shipped for a named profile."""
    known = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
    if profile not in known:
        raise ReproError(
            f"unknown profile {profile!r}; choose one of {', '.join(known)} "
            "or give your own file with --study"
        )
    return PROFILES_DIR / f"{profile}.toml"


def select_runs(study: Study, run_ids: list[str] | None, shard: str | None) -> tuple[Run, ...]:
    """The runs a command works on: --runs picks by id, --shard i/n takes every n-th variant.

    Shards split variants, not runs, so that no two shards prune or capture the same variant
    (except the dense runs a shard's pruned runs are evaluated against; repro.stages.run runs
    those under stage locks, so whichever shard gets there first does them).
    """
    runs = tuple(study.run(r) for r in run_ids) if run_ids else study.runs
    if shard:
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError:
            raise ReproError(f"--shard {shard!r} is not of the form i/n (e.g. 0/4)") from None
        if not 0 <= i < n:
            raise ReproError(f"--shard {shard}: need 0 <= i < n")
        mine = set(study.variants[i::n])
        runs = tuple(r for r in runs if r.variant in mine)
    return runs
