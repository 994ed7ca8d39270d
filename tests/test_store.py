"""The artifact store: skip when done, redo when inputs or outputs change, never half-write."""

from __future__ import annotations

import json

import pytest

from repro.stages.store import MANIFEST, check_done, hash_inputs, run_stage


def writer(text: str, calls: list):
    def work(tmp):
        calls.append(text)
        (tmp / "out.txt").write_text(text)
        return {"n": len(text)}

    return work


def test_second_run_is_skipped_and_manifest_records_outputs(tmp_path) -> None:
    calls: list = []
    first = run_stage(tmp_path / "s", {"a": 1}, writer("x", calls), provenance={"p": 1})
    second = run_stage(tmp_path / "s", {"a": 1}, writer("x", calls), provenance={"p": 1})
    assert (first.status, second.status, calls) == ("done", "skipped", ["x"])
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["input_hash"] == hash_inputs({"a": 1})
    assert set(manifest["outputs"]) == {"out.txt"} and manifest["result"] == {"n": 1}


def test_changed_inputs_and_forced_runs_redo(tmp_path) -> None:
    calls: list = []
    run_stage(tmp_path / "s", {"a": 1}, writer("x", calls), provenance={})
    assert (
        run_stage(tmp_path / "s", {"a": 2}, writer("y", calls), provenance={}).reason
        == "inputs changed"
    )
    assert (
        run_stage(tmp_path / "s", {"a": 2}, writer("z", calls), provenance={}, force=True).status
        == "done"
    )
    assert calls == ["x", "y", "z"] and (tmp_path / "s" / "out.txt").read_text() == "z"


def test_corrupted_output_is_detected_and_redone(tmp_path) -> None:
    calls: list = []
    run_stage(tmp_path / "s", {"a": 1}, writer("x", calls), provenance={})
    (tmp_path / "s" / "out.txt").write_text("tampered")
    assert "does not match" in check_done(tmp_path / "s", hash_inputs({"a": 1}))
    assert run_stage(tmp_path / "s", {"a": 1}, writer("x", calls), provenance={}).status == "done"
    assert (tmp_path / "s" / "out.txt").read_text() == "x"


def test_a_crash_leaves_no_stage_folder(tmp_path) -> None:
    def boom(tmp):
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "s", {"a": 1}, boom, provenance={})
    assert not (tmp_path / "s").exists()
    assert check_done(tmp_path / "s", hash_inputs({"a": 1})) == "not run yet"
    calls: list = []
    assert run_stage(tmp_path / "s", {"a": 1}, writer("x", calls), provenance={}).status == "done"
    assert not (tmp_path / ".s.partial").exists()


def test_folder_without_manifest_is_not_done(tmp_path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "out.txt").write_text("x")
    assert check_done(tmp_path / "s", hash_inputs({})) == "no valid manifest"
