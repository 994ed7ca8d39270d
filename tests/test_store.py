"""The artifact store: skip when done, redo when inputs or outputs change, never half-write."""

from __future__ import annotations

import json

import pytest

from repro.stages.store import MANIFEST, check_done, hash_inputs, run_stage, run_stages_together


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


def _group(tmp_path, names, prepared: list, *, fail_at: str | None = None, force=False):
    """run_stages_together over folders `names`, each writing its name; `prepared` records
    the positions the shared part was asked for."""
    def prepare(todo):
        prepared.append(list(todo))

        def work_of(name):
            def work(tmp):
                if name == fail_at:
                    raise KeyboardInterrupt  # a kill while writing this folder
                (tmp / "out.txt").write_text(name)
                return {"name": name}
            return work

        return [work_of(names[i]) for i in todo], 6.0

    return run_stages_together([tmp_path / n for n in names], [{"n": n} for n in names],
                               prepare, provenance=[{}] * len(names), force=force)


def test_stages_together_share_one_prepare_and_redo_only_what_is_missing(tmp_path) -> None:
    """The shared part (an SAE group's training) runs once for the folders not done, and
    only for them: a kill while writing loses that folder, not the ones written before it."""
    names, prepared = ["a", "b", "c"], []
    with pytest.raises(KeyboardInterrupt):
        _group(tmp_path, names, prepared, fail_at="b")
    assert prepared == [[0, 1, 2]]
    assert (tmp_path / "a" / "out.txt").is_file() and not (tmp_path / "b").exists()
    before = (tmp_path / "a" / MANIFEST).read_bytes()
    outcomes = _group(tmp_path, names, prepared)
    assert prepared[-1] == [1, 2]  # a was done: the group retrains b and c only
    assert [o.status for o in outcomes] == ["skipped", "done", "done"]
    assert (tmp_path / "a" / MANIFEST).read_bytes() == before
    manifests = [json.loads((tmp_path / n / MANIFEST).read_text()) for n in "bc"]
    assert all(m["wall_seconds"] >= 3.0 for m in manifests)  # an even share of the 6 s
    assert _group(tmp_path, names, prepared)[0].status == "skipped" and len(prepared) == 2
    assert [o.status for o in _group(tmp_path, names, prepared, force=True)] == ["done"] * 3
    assert prepared[-1] == [0, 1, 2]
