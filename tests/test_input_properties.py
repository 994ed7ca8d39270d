"""Inputs no list names (issue 26): Hypothesis mutates the tiny study file and the tiny Llama's
config.json, and `repro all --check` must keep the promise for every one of them: exit code 0,
or exit code 2 with one line on stderr; never a traceback; nothing written, anywhere in the
folder the study, the model and --out live in.

A mutation replaces one value anywhere in the document (by a value of another type, out of
range, infinite, a path, text with a NUL...), deletes one key, or adds one; a study may also be
cut or have characters inserted into its text. --check runs the same preflight as a real run
(repro.outputs.preflight) and stops there, so an example costs about 0.1 s. Examples per test:
EXAMPLES (derandomized, so CI runs the same ones); REPRO_HYPOTHESIS_EXAMPLES=N explores.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

sys.path.insert(0, str(Path(__file__).parent))
from badinput import ASSETS, TINY  # noqa: E402
from hostile import (  # noqa: E402
    assert_promise,
    dump_toml,
    files,
    json_values,
    mutate,
    names,
    paths,
    run_cli,
    values,
)

EXPLORE = os.environ.get("REPRO_HYPOTHESIS_EXAMPLES")
"""Unset (CI): EXAMPLES derandomized examples per test, the same every run. Set to N: N random
examples per test, new ones each run, to hunt for inputs that break the promise."""
EXAMPLES = int(EXPLORE or 150)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE,
                    database=None, suppress_health_check=[HealthCheck.too_slow])
STUDY = tomllib.loads(TINY)
LLAMA = ASSETS / "models" / "llama-tiny"
CONFIG = json.loads((LLAMA / "config.json").read_text())


def _check(study_text: str, config: str | None = None) -> None:
    """Write the study (and a copy of the tiny Llama with this config.json) into a fresh
    folder, run `repro all --check`, hold it to the promise."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if config is not None:
            model = root / "model"
            model.mkdir()
            for part in LLAMA.iterdir():
                if part.name != "config.json":
                    (model / part.name).symlink_to(part)
            (model / "config.json").write_text(config)
            study_text = study_text.replace(str(LLAMA), str(model))
        (root / "study.toml").write_text(study_text)
        before = files(root)
        code, out, err = run_cli(["all", "--study", str(root / "study.toml"), "--out",
                                  str(root / "a" / "b" / "out"), "--check"])
        assert_promise(code, out, err)
        assert files(root) == before, sorted(files(root) - before)
    if currently_in_test_context():  # --hypothesis-show-statistics counts the outcomes
        event(f"exit {code}")


places = st.sampled_from(paths(STUDY))
ops = st.sampled_from(["replace", "replace", "delete", "add"])


@SETTINGS
@given(where=places, op=ops, value=values, key=names)
def test_a_mutated_study_is_run_or_refused_in_one_line(where, op, value, key) -> None:
    _check(dump_toml(mutate(STUDY, where, op, value, key)))


@SETTINGS
@given(cut=st.integers(0, len(TINY)), junk=st.text(max_size=8))
def test_a_study_cut_or_spliced_is_run_or_refused_in_one_line(cut, junk) -> None:
    _check(TINY[:cut] + junk + TINY[cut + len(junk):])


@SETTINGS
@given(where=st.sampled_from(paths(CONFIG)), op=ops, value=json_values, key=names)
def test_a_mutated_model_config_is_run_or_refused_in_one_line(where, op, value, key) -> None:
    _check(TINY, json.dumps(mutate(CONFIG, where, op, value, key)))


def test_the_generator_reaches_both_outcomes(tmp_path: Path) -> None:
    """Negative control of the harness: an unmutated study passes the check, a planted bad
    value is refused, and a traceback is not taken for a refusal."""
    _check(dump_toml(STUDY))
    study = tmp_path / "study.toml"
    study.write_text(dump_toml(mutate(STUDY, ("sae", "width"), "replace", 0, "")))
    code, out, err = run_cli(["all", "--study", str(study), "--out", str(tmp_path / "o"),
                              "--check"])
    assert code == 2 and "sae.width = 0" in err
    assert_promise(code, out, err)
    assert not (tmp_path / "o").exists()
    for planted in ((1, "", "Traceback (most recent call last):\n"), (2, "", "one\ntwo\n"),
                    (0, "", "repro: warning: x\n")):
        try:
            assert_promise(*planted)
        except AssertionError:
            continue
        raise AssertionError(f"{planted} passed for a kept promise")
