"""The matchings behind the tables: each dense feature paired with a feature of another SAE
(repro.science.match), cached by a key per pair so that every table reads one matching.

A mixin of repro.outputs.analysis.Analysis, which supplies the run lookups (dense_run,
condition_run, control_run, dense_seeds), the decoders (decoder_of), the study and the
cache (`_matches`). On a machine with the cores and memory for more than one, every matching
is computed up front in parallel processes (`prefetch_matches`); elsewhere each is computed
when first asked for. The matchings are the same either way (tests/test_end_to_end.py).
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

from repro.science import match
from repro.study.spec import Variant

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from repro.study.spec import Run, Study


Pair = tuple[str, "Run", "Run"]
"""A matching's cache key and the runs whose SAEs it matches (the first into the second)."""


class Matchings:
    """Survival, control and seed matchings of one replicate's runs, each computed once."""

    study: Study
    _matches: dict[str, match.Match]

    if TYPE_CHECKING:  # what Analysis supplies
        def decoder_of(self, run: Run) -> np.ndarray: ...
        def dense_run(self, model: str) -> Run: ...
        def condition_run(self, variant: Variant) -> Run: ...
        def control_run(self, variant: Variant) -> Run | None: ...
        def dense_seeds(self, model: str) -> Sequence[Run]: ...

    def _matched(self, pair: Pair) -> match.Match:
        key, run_a, run_b = pair
        if key not in self._matches:
            self._matches[key] = match.hungarian_match(self.decoder_of(run_a),
                                                       self.decoder_of(run_b))
        return self._matches[key]

    def _survival_pair(self, variant: Variant) -> Pair:
        return variant.id, self.dense_run(variant.model), self.condition_run(variant)

    def _control_pair(self, variant: Variant) -> Pair | None:
        run = self.control_run(variant)
        return None if run is None else (f"{variant.id}|control",
                                         self.dense_run(variant.model), run)

    @staticmethod
    def _seed_pair(run_a: Run, run_b: Run) -> Pair:
        return f"{run_a.id}|{run_b.id}", run_a, run_b

    def survival_match(self, variant: Variant) -> match.Match:
        """Dense-SAE features (same seed) matched one to one into the pruned run's SAE."""
        return self._matched(self._survival_pair(variant))

    def control_match(self, variant: Variant) -> match.Match | None:
        """Dense-SAE features (study seed) matched into the variant's control-seed SAE: the
        two share no initial weights and no data order."""
        pair = self._control_pair(variant)
        return None if pair is None else self._matched(pair)

    def seed_match(self, run_a: Run, run_b: Run) -> match.Match:
        """Features of one dense seed's SAE matched into another's (RQ1)."""
        return self._matched(self._seed_pair(run_a, run_b))

    def matched_pairs(self) -> dict[str, tuple[Run, Run]]:
        """Every matching the tables ask for, by its key in the cache: each condition's
        survival, each variant's control, each pair of dense seeds (the pairs the three
        accessors above build, so the keys are theirs)."""
        pairs = [self._survival_pair(v) for v in self.study.conditions]
        pairs += [p for v in self.study.variants if (p := self._control_pair(v)) is not None]
        pairs += [self._seed_pair(a, b) for model in self.study.models
                  for a, b in combinations(self.dense_seeds(model), 2)]
        return {key: (run_a, run_b) for key, run_a, run_b in pairs}

    def prefetch_matches(self) -> None:
        """Compute every matching up front in parallel processes where the machine has the
        cores and memory for more than one (`match.match_workers`); elsewhere they are
        computed when first asked for, one at a time. The same matchings either way."""
        todo = {k: pair for k, pair in self.matched_pairs().items() if k not in self._matches}
        width = self.study.sae.width
        workers = match.match_workers(len(todo), width, width)
        if workers > 1:
            found = match.hungarian_many([(self.decoder_of(a), self.decoder_of(b))
                                          for a, b in todo.values()], workers)
            self._matches.update(zip(todo, found, strict=True))
