"""Reading study files: TOML -> validated `repro.study.spec` dataclasses, one-line errors.

`repro list --study FILE` loads any study file; `--profile NAME` one of repro/study/studies/.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

from repro.errors import ReproError
from repro.files import path_problem
from repro.study.methods import (
    METHODS,
    PRUNING_METHODS,
    UNSTRUCTURED,
    Pattern,
    known_methods,
)
from repro.study.rules import NAME, FieldError, need, rule_of, shown, text
from repro.study.sources import DataSpec, ModelSpec, PretrainedSae, StreamSpec, TextSource
from repro.study.spec import (
    REPLICATE_SEED_STRIDE,
    Run,
    SaeSpec,
    Study,
    Thresholds,
    Variant,
    VerdictSpec,
)

PROFILES_DIR = Path(__file__).resolve().parent / "studies"
CONTEXT = "study file"
"""How every refusal of a study value starts."""
SECTIONS: dict[str, type] = {f.name: get_type_hints(Study)[f.name] for f in fields(Study)
                             if f.metadata.get("section")}
"""The study file's tables read straight into a spec dataclass: every field of Study declared
with repro.study.rules.section ([sae], [thresholds], ...)."""
TOP_LEVEL = ("study", "models", "conditions", "extra_seeds", "data", *SECTIONS)
HEAD = ("name", "device", "dtype", "seed", "numerics", "description")
"""The keys of [study]; each but description is a field of Study with its declared rule."""
DESCRIPTION = text("a line that says what the study is")


def _check_keys(
    table: dict[str, Any], cls: type | None, where: str, extra: tuple[str, ...] = ()
) -> None:
    allowed = {f.name for f in fields(cls) if f.name != "key"} if cls else set()
    allowed |= set(extra)
    unknown = sorted(set(table) - allowed)
    need(
        not unknown,
        where,
        f"unknown key(s) {', '.join(k if NAME.fullmatch(k) else repr(k) for k in unknown)}; "
        f"allowed: {', '.join(sorted(allowed))}",
    )


def _table(value: Any, where: str, what: str = "must be a table") -> dict[str, Any]:
    need(isinstance(value, dict), where, what)
    return value


def _build(cls: type, table: Any, where: str, **fixed: Any) -> Any:
    """Construct a spec dataclass from a TOML table: keys first, then every declared rule
    (in the class's __post_init__), each refusal naming `where.field`."""
    table = _table(table, where)
    _check_keys(table, cls, where)
    try:
        return cls(**table, **fixed)
    except FieldError as exc:
        raise exc.at(CONTEXT, where, f"change {where}.{exc.name} in the study file") from None
    except TypeError as exc:  # a missing field
        raise ReproError(f"{CONTEXT}: {where}: {exc}") from None


def _field(cls: type, name: str, value: Any, where: str, shown: str = "") -> None:
    """One declared field of `cls` checked before the value is used to build anything else;
    `shown` names it in the message when the study file calls it otherwise."""
    try:
        rule_of(cls, name).check(shown or name, value)
    except FieldError as exc:
        raise exc.at(CONTEXT, where, f"change {where}.{shown or name} in the study file"
                     ) from None


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _resolve(path: str, base: Path, where: str = "") -> str:
    """Local paths are relative to the study file (with or without ./); a path that names no
    folder there is a Hub id, and must look like one (org/name); packaged sources stay."""
    if path.startswith((".", "/", "~")):
        return _real(base / Path(path).expanduser(), where)
    if path.startswith("package:") or not where:
        return path
    if (base / path).exists():
        return _real(base / path, where)
    need(bool(HUB_ID.fullmatch(path)) and not path.endswith((".", "-")), where,
          f"{path!r} is neither a folder (relative to the study file, {base}) nor a Hugging "
          "Face Hub id (org/name); fix the path")
    return path


def _real(path: Path, where: str) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's word for a symlink loop
        raise ReproError(f"{CONTEXT}: {where or 'a path'}: {path} is a loop of symbolic links; "
                         "fix the path") from None


def _model(key: str, table: Any, base: Path) -> ModelSpec:
    try:
        rule_of(ModelSpec, "key").check("model key", key)
    except FieldError as exc:
        raise exc.at(CONTEXT, fix=f"rename [models.{json.dumps(key)}] in the study file"
                     ) from None
    where = f"models.{key}"
    table = dict(_table(table, where))
    sae = table.pop("pretrained_sae", None)
    if sae is not None:
        sae = _build(PretrainedSae, sae, f"{where}.pretrained_sae")
        if sae.path:
            sae = PretrainedSae(path=_resolve(sae.path, base))
    if "source" in table:
        _field(ModelSpec, "source", table["source"], where)
        table["source"] = _resolve(table["source"], base, f"{where}.source")
    return _build(ModelSpec, table, where, key=key, pretrained_sae=sae)


def _stream(table: Any, where: str, base: Path) -> StreamSpec:
    table = dict(_table(table, where))
    source = _build(TextSource, table.pop("source", None), f"{where}.source")
    if source.path.startswith((".", "/")):
        source = TextSource(**{**source.__dict__, "path": _resolve(source.path, base)})
    elif source.kind == "hub":
        need(bool(HUB_ID.fullmatch(source.path)), f"{where}.source",
              f"path {source.path!r} is neither a folder (start it with ./ or /) nor a Hugging "
              "Face Hub dataset id (org/name); fix the path")
    return _build(StreamSpec, table, where, source=source)


def _entries(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """An array of tables ([[conditions]], [[extra_seeds]]), each entry checked to be a table."""
    entries = raw.get(key, [])
    need(isinstance(entries, list), key, f"must be [[{key}]] entries (tables), got "
          f"{type(entries).__name__}")
    for i, entry in enumerate(entries):
        _table(entry, f"{key}[{i}]")
    return entries


def _model_of(entry: dict[str, Any], models: dict[str, ModelSpec], where: str) -> str:
    model = entry.get("model")
    need(isinstance(model, str) and model in models, where,
          f"model {model!r} is not among [models]: {', '.join(models)}")
    assert isinstance(model, str)  # need refused anything else
    return model


def _pattern(pattern: Any, where: str) -> None:
    """A pattern the registry knows (repro.study.methods.Pattern), refused where it stands."""
    try:
        Pattern.parse(pattern)
    except ReproError as exc:
        raise ReproError(f"study file: {where}: {exc}") from None


def _sparsities(entry: dict[str, Any], method: str, where: str) -> list[float]:
    """The entry's sparsities for one of its methods, each checked: in (0, 1) for a method
    that prunes, 0 for one that removes no weight (quantization), which may leave them out."""
    prunes = METHODS[method].prunes
    sparsities = entry.get("sparsities", [] if prunes else [0])
    need(isinstance(sparsities, list) and bool(sparsities), where,
          "sparsities must be a non-empty list")
    for s in sparsities:
        need(isinstance(s, int | float) and not isinstance(s, bool), where,
              f"sparsity {s!r} is not a number")
        if prunes:
            need(0.0 < s < 1.0, where, f"sparsity {s} is outside (0, 1); write 0.5 for 50 %")
        else:
            need(s == 0, where, f"method {method} removes no weights, so its sparsity is 0, "
                  f"not {s}; write sparsities = [0] or leave them out")
    return [float(s) for s in sparsities]


def _runs(raw: dict[str, Any], models: dict[str, ModelSpec], seed: int) -> tuple[Run, ...]:
    grid = _entries(raw, "conditions")
    need(bool(grid), "conditions", "needs at least one [[conditions]] entry")
    variants: list[Variant] = []
    for i, entry in enumerate(grid):
        where = f"conditions[{i}]"
        _check_keys(entry, None, where, extra=("model", "methods", "sparsities", "patterns"))
        model = _model_of(entry, models, where)
        methods = entry.get("methods", [])
        patterns = entry.get("patterns", [UNSTRUCTURED])
        need(isinstance(methods, list) and bool(methods), where,
              "methods must be a non-empty list")
        need(isinstance(patterns, list) and bool(patterns), where,
              f"patterns must be a non-empty list (e.g. [\"{UNSTRUCTURED}\", \"2:4\"] or "
              "[\"int8\", \"int4\"])")
        for pattern in patterns:
            _pattern(pattern, where)
        for method in methods:
            need(method in PRUNING_METHODS, where,
                  f"method {shown(method)} is not known; use one of {known_methods()}")
        for method in methods:
            variants += [Variant(model, method, s, pattern)
                         for s in _sparsities(entry, method, where) for pattern in patterns]
    runs = [Run(Variant(m, "dense", 0.0), seed) for m in models]
    runs += [Run(v, seed) for v in variants]
    for i, entry in enumerate(_entries(raw, "extra_seeds")):
        where = f"extra_seeds[{i}]"
        _check_keys(entry, None, where, extra=("model", "seeds"))
        model, seeds = _model_of(entry, models, where), entry.get("seeds", [])
        need(isinstance(seeds, list), where, f"seeds must be a list of whole numbers, got "
              f"{seeds!r}")
        for j, seed_ in enumerate(seeds):
            _field(Run, "seed", seed_, where, f"seeds[{j}]")
        need(seed not in seeds, where, f"seed {seed} is the study's base seed; pick others")
        runs += [Run(Variant(model, "dense", 0.0), s, is_extra_seed=True) for s in seeds]
    return tuple(runs)


def _controls(runs: tuple[Run, ...], sae: SaeSpec) -> tuple[Run, ...]:
    """One control-seed run per variant, when the study declares a control_seed."""
    if sae.control_seed is None:
        return runs
    seeds = {r.seed for r in runs}
    need(sae.control_seed not in seeds, "sae",
          f"control_seed {sae.control_seed} is already a seed of the study; pick another")
    variants = dict.fromkeys(r.variant for r in runs)
    return runs + tuple(Run(v, sae.control_seed, is_control=True) for v in variants)


def _replicates(runs: tuple[Run, ...], verdict: VerdictSpec) -> tuple[Run, ...]:
    """Every run again in each further replicate, from seeds no base run uses."""
    if verdict.replicates > 1:
        wide = sorted({r.seed for r in runs if not 0 <= r.seed < REPLICATE_SEED_STRIDE})
        need(not wide, "verdict", f"seeds {wide} would collide with replicate seeds (seed + "
              f"r * {REPLICATE_SEED_STRIDE}); with replicates, keep every seed in "
              f"[0, {REPLICATE_SEED_STRIDE})")
    return runs + tuple(r.replicated(i) for i in range(1, verdict.replicates) for r in runs)


def _head(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """[study]: name (the file's name when left out), device, dtype, seed, each checked."""
    head = _table(raw.get("study", {}), "study")
    _check_keys(head, None, "study", extra=HEAD)
    try:
        DESCRIPTION.check("description", head.get("description", ""))
    except FieldError as exc:
        raise exc.at(CONTEXT, "study", "change study.description in the study file") from None
    values = {"name": head.get("name", path.stem), "device": head.get("device", "cpu"),
              "dtype": head.get("dtype", "float32"), "seed": head.get("seed", 0),
              "numerics": head.get("numerics", "pinned")}
    for key, value in values.items():
        if key == "name" and "name" not in head:
            try:
                rule_of(Study, "name").check("name", value)
            except FieldError:
                raise ReproError(f"{CONTEXT}: the study is named after its file, {path.name}, "
                                 f"and {value!r} is not a plain name (letters, digits, '.', "
                                 "'_', '-'); set [study] name") from None
        _field(Study, key, value, "study")
    return values


def load_study(path: Path) -> Study:
    """Read and validate a study file; every problem is a one-line ReproError."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError:  # a name too long, a loop of symbolic links
        found = False
    if not found:
        what = "does not exist" if not path.exists() else path_problem(path)
        raise ReproError(f"study file {path} {what}; give an existing TOML file to --study")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ReproError(f"study file {path} is not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise ReproError(f"study file {path} cannot be read ({exc.strerror}); give a readable "
                         "file to --study") from None
    base = path.resolve().parent
    _check_keys(raw, None, "top level", extra=TOP_LEVEL)
    head = _head(raw, path)
    models_raw = raw.get("models", {})
    need(isinstance(models_raw, dict) and bool(models_raw), "models",
          "needs at least one [models.KEY]")
    models = {key: _model(key, table, base) for key, table in models_raw.items()}
    data_raw = _table(raw.get("data", {}), "data")
    _check_keys(data_raw, DataSpec, "data")
    data = DataSpec(
        **{f.name: _stream(data_raw.get(f.name), f"data.{f.name}", base) for f in fields(DataSpec)}
    )
    sections = {name: _build(cls, raw.get(name, {}), name) for name, cls in SECTIONS.items()}
    return Study(
        path=path.resolve(),
        models=models,
        data=data,
        runs=_replicates(_controls(_runs(raw, models, head["seed"]), sections["sae"]),
                         sections["verdict"]),
        **head,
        **sections,
    )


def read_thresholds(table: Any) -> Thresholds:
    """[thresholds] of a study file, each key known and each value within its rule; the
    defaults for the keys left out."""
    return _build(Thresholds, table, "thresholds")


def thresholds_of(path: Path) -> Thresholds:
    """The [thresholds] of a study file read alone: what `repro report` needs from a run
    folder's copy, which it never loads as a whole study. The defaults when the file is
    absent or not TOML (the report shows what it can); a bad value is refused as in
    `load_study`."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return Thresholds()
    return read_thresholds(raw.get("thresholds", {}))


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
