"""Study files: the shipped profiles hold the paper's 22 runs; shards partition them. (Every
malformed field, through the CLI: tests/test_bad_input.py.)"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from repro.study.reader import load_study, profile_path, select_runs

TINY = profile_path("tiny").read_text()


@pytest.mark.parametrize("profile", ["paper", "tiny"])
def test_profiles_hold_22_runs_17_conditions(profile: str) -> None:
    """The paper's 22 runs, plus one control-seed SAE per variant (20) beside them, in
    replicate 0; further replicates repeat every one of them with other seeds."""
    full = load_study(profile_path(profile))
    study = replace(full, runs=full.replicate_runs(0))
    assert len(full.runs) == 42 * full.verdict.replicates
    paper_runs = [r for r in study.runs if not r.is_control]
    assert len(paper_runs) == 22 and len(study.conditions) == 17 and len(study.variants) == 20
    first = next(iter(study.models))
    wanda = [v for v in study.conditions if v.model == first and v.method == "wanda"]
    assert [round(v.sparsity * 100) for v in wanda] == [10, 20, 30, 40, 50, 60]
    assert sum(r.is_extra_seed for r in study.runs) == 2
    controls = [r for r in study.runs if r.is_control]
    assert {r.variant for r in controls} == set(study.variants) and len(controls) == 20
    assert {r.seed for r in controls} == {study.sae.control_seed} != {study.seed}
    assert len({r.id for r in study.runs}) == 42 and not any(r.is_evaluated for r in controls)


def test_paper_ids_and_probe_layers() -> None:
    study = load_study(profile_path("paper"))
    assert study.run("gemma-3-1b/wanda/50").variant.sparsity == 0.5
    assert {k: m.probe_layer for k, m in study.models.items()} == {
        "gemma-3-1b": 13,
        "gemma-2-2b": 12,
        "llama-3.2-1b": 8,
    }
    assert study.models["llama-3.2-1b"].pretrained_sae is None
    assert study.data.calibration.n_sequences == 128 and study.data.calibration.seq_len == 2048


def test_shards_partition_variants() -> None:
    study = load_study(profile_path("tiny"))
    shards = [select_runs(study, None, f"{i}/3") for i in range(3)]
    assert sorted(r.id for s in shards for r in s) == sorted(r.id for r in study.runs)
    variants = [{r.variant for r in s} for s in shards]
    assert not (variants[0] & variants[1]) and not (variants[1] & variants[2])


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["list", "--profile", "nope"], "unknown profile 'nope'"),
        (["list", "--study", "/no/such.toml"], "does not exist"),
        (["list", "--runs", "gemma-3-tiny/wanda/55"], "unknown run id"),
        (["list", "--shard", "3/2"], "need 0 <= i < n"),
        (["all", "--profile", "paper", "--out", "x"], "needs a CUDA GPU"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = run_cli("all", "--profile", "tiny", "--out", str(blocker / "sub"), "--quiet")
    assert res.returncode == 2 and "cannot write to output folder" in res.stderr


def test_list_prints_every_run() -> None:
    res = run_cli("list", "--profile", "paper")
    assert res.returncode == 0
    assert "gemma-3-1b/wanda/60" in res.stdout
    assert "22 runs + 20 control-seed SAEs (17 conditions" in res.stdout
    assert "the default" not in res.stdout


def test_a_bare_list_says_which_profile_it_lists() -> None:
    """`repro list` means the tiny profile, as every command does, and says so first."""
    res = run_cli("list")
    assert res.returncode == 0 and res.stdout.startswith("profile tiny (the default; ")
    assert "gemma-3-tiny/wanda/60" in res.stdout


def test_the_input_contract_lists_every_rule() -> None:
    """docs/input-contract.md has one row per declared study value, as the rule states it:
    adding a field without its row (or changing a bound without the page) fails here."""
    from dataclasses import fields

    from repro.study import sources, spec

    page = (Path(__file__).resolve().parents[1] / "docs" / "input-contract.md").read_text()
    places = [(spec.Study, "study."), (sources.ModelSpec, "models.KEY."),
              (sources.PretrainedSae, "models.KEY.pretrained_sae."),
              (sources.StreamSpec, "data.STREAM."),
              (sources.TextSource, "data.STREAM.source."), (spec.SaeSpec, "sae."),
              (spec.VerdictSpec, "verdict."), (spec.Thresholds, "thresholds.")]
    rows = [(("[models.KEY] (the key)" if f.name == "key" else prefix + f.name), f.metadata["rule"])
            for cls, prefix in places for f in fields(cls) if "rule" in f.metadata]
    rows += [("extra_seeds[].seeds[]", fields(spec.Run)[1].metadata["rule"])]
    missing = [name for name, rule in rows
               if f"| `{name}` | {rule.allowed()} | {rule.why} |" not in page]
    assert len(rows) == 49 and missing == []
