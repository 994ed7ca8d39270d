"""`repro report`: one self-contained page with every table, figure, verdict and stage time."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from runfolder import IDS, TABLES, make_run  # noqa: E402

from repro.cli import main  # noqa: E402
from repro.outputs.report import gather  # noqa: E402
from repro.outputs.verify import verify_run  # noqa: E402

CAPTION = "Survival rate per firing-rate bin, one line per condition."
PAPER_C1 = "Rare SAE features survive pruning better than frequent ones"


def _figure(run: Path) -> bytes:
    folder = run / "figures"
    folder.mkdir()
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    for ext in ("png", "pdf"):
        fig.savefig(folder / f"F3_survival_by_frequency.{ext}")
    plt.close(fig)
    (folder / "captions.json").write_text(json.dumps({"F3_survival_by_frequency": CAPTION}))
    return (folder / "F3_survival_by_frequency.png").read_bytes()


def test_report_embeds_tables_figures_verdicts_and_stage_times(tmp_path: Path, capsys) -> None:
    run, expected = make_run(tmp_path)
    png = _figure(run)
    verify_run(run, expected)
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    for table in TABLES:
        assert f"<h3>{table}</h3>" in page
    for rid in IDS:
        assert page.count(f"<td>{rid}</td>") == len(TABLES)
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert CAPTION in page and 'class="verdict pass">PASS<span class="note">blessed 11 (exact)' \
        in page
    assert 'class="verdict holds">HOLDS</td>' in page
    # the claim links to the figure that shows it; the whole statement is its tooltip
    assert '<a href="#F3_survival_by_frequency">C1</a>' in page
    assert '<figure id="F3_survival_by_frequency">' in page and f'title="{PAPER_C1}' in page
    assert "Verification PASS" in page and "0.1.0+abc123" in page
    md = (run / "report.md").read_text()
    assert "![F3_survival_by_frequency](figures/F3_survival_by_frequency.png)" in md
    assert "(figures/F3_survival_by_frequency.pdf)" in md and f"| {IDS[1]} |" in md


def test_stage_times_are_summed_per_stage_name(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    for name, seconds in (("a", 1.5), ("b", 2.0)):
        folder = run / "variants" / name / "prune"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps(
            {"stage": "prune", "wall_seconds": seconds, "provenance": {"device": "gpu-x"}}))
    hidden = run / "variants" / ".c.partial"
    hidden.mkdir()
    (hidden / "manifest.json").write_text(json.dumps({"stage": "prune", "wall_seconds": 99}))
    rep = gather(run)
    stages = {s: (n, sec) for s, n, sec in rep.stages}
    made = json.loads((run / "variants" / "x" / "prune" / "manifest.json").read_text())
    assert stages["prune"] == (3, 3.5 + made["wall_seconds"])
    assert set(stages) == {"prune", "tables"} and rep.provenance["devices"]["gpu-x"] == 2


def test_report_without_verification_says_so(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    main(["report", str(run)])
    assert "Not verified yet" in (run / "report.md").read_text()
    assert "NOT VERIFIED" in (run / "report.html").read_text()


def test_an_incomplete_run_says_so_at_the_top_and_ends_partial(tmp_path: Path,
                                                             capsys) -> None:
    from repro.study.reader import profile_path

    run = tmp_path / "run"
    run.mkdir()
    (run / "study.toml").write_text(profile_path("tiny").read_text())  # killed before any stage
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    # 22 runs and 20 control SAEs not run, nor the study-level stages: nothing to compare yet
    line = "verification PARTIAL: 0 of 42 runs finished, 0 of "
    assert line in out and f"finish with: repro all --profile tiny --out {run} " in out
    top = (run / "report.md").read_text().splitlines()[:6]
    assert any(text.startswith(f"**V{line[1:]}") for text in top), top
    assert main(["verify", str(run)]) == 3
    assert capsys.readouterr().out.startswith(line)
    empty = tmp_path / "empty"  # not a run: refused, and nothing written into it
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "is not a run folder: it has no study.toml" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_a_complete_run_is_not_called_incomplete(tmp_path: Path) -> None:
    run, expected = make_run(tmp_path)
    verify_run(run, expected)
    assert main(["report", str(run)]) == 0
    assert "Incomplete" not in (run / "report.md").read_text()


def _curve(run: Path, sae: str, ev: list[float]) -> None:
    folder = run / "runs" / sae / "sae"
    folder.mkdir(parents=True)
    points = [{"step": i + 1, "tokens": (i + 1) * 100, "explained_variance": v, "l0": 4.0,
               "dead_fraction": 0.1} for i, v in enumerate(ev)]
    (folder / "curve.json").write_text(json.dumps({"run": sae, "points": points}))


def test_training_curves_are_drawn_and_a_still_rising_sae_is_warned_about(tmp_path: Path) -> None:
    """Negative control: of two SAEs, the one planted still rising is named, the flat one not."""
    run, expected = make_run(tmp_path)
    verify_run(run, expected)
    _curve(run, "gemma-3-tiny/dense/0", [0.8] * 40)
    _curve(run, "gemma-3-tiny/wanda/50", [0.02 * i for i in range(40)])
    _curve(run, ".x.partial/dense/0", [0.0] * 40)  # unfinished work is not shown
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    warned = [line for line in md.splitlines() if line.startswith("- **Warning**: SAE")]
    assert len(warned) == 1 and "gemma-3-tiny/wanda/50" in warned[0]
    assert "| gemma-3-tiny/dense/0 | 4000 | 40 | 0.8 | 4 | 0.1 |" in md and "| NO |" in md
    assert ".x.partial" not in md and "Verification PASS" in md  # the verdict is untouched
    first_screen = md.split("## Method controls")[0]
    assert "<details><summary>Training: 1 of 2 SAEs had not flattened" in first_screen
    png = (run / "report_training_curves.png").read_bytes()
    page = (run / "report.html").read_text()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert page.count("Warning: SAE") == 1


def test_a_run_without_curves_says_so(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    main(["report", str(run)])
    assert "No SAE of this run recorded a training curve" in (run / "report.md").read_text()
    assert not (run / "report_training_curves.png").exists()
    assert "had not flattened" not in (run / "report.md").read_text()


def test_the_flattening_threshold_is_the_study_files(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    _curve(run, "gemma-3-tiny/wanda/50", [0.02 * i for i in range(40)])
    assert len(gather(run).curves) == 1 and gather(run).flat_gain == 0.01
    (run / "study.toml").write_text("[thresholds]\ncurve_flat_ev_gain = 0.5\n")
    main(["report", str(run)])
    assert "Warning" not in (run / "report.md").read_text()  # a gain of 0.2 is below 0.5
