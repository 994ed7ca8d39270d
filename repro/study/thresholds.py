"""The analysis thresholds of a study ([thresholds] in the study file, and tau in [sae]): each
declared once, with its rule and its default, read once by repro.study.reader.

Every stage, table, figure, report and estimate reads them from the loaded `Study`
(`study.thresholds.fragile_r`, `study.sae.survival_threshold`); none keeps a default of its
own. docs/design.md says what each one decides.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from repro.errors import ReproError
from repro.study.rules import check_fields, declare, number, whole

SURVIVAL_TAU = 0.7
"""The paper's tau: a feature survives when its matched decoder cosine is at least this
(the default of `[sae] survival_threshold`; repro.science.survival applies it)."""
N_BINS = 5
"""Equal-count firing-rate bins of RQ2's frequency analysis and RQ5's sample (the default of
`frequency_bins`): the paper's quintiles."""


@dataclass(frozen=True)
class Thresholds:
    """[thresholds]: every key optional, each within its rule."""

    viable_ce_score: float = declare(number(None, 1.0, "RQ3: the CE-loss score an SAE must "
                                            "reach; a score, not a percentage"), 0.9)
    """RQ3: an SAE is viable on a model when its CE-loss score is at least this."""
    fragile_r: float = declare(number(-1.0, 1.0, "RQ4: the Pearson r below which a feature is "
                                      "fragile"), 0.5)
    """RQ4: a feature whose dense-vs-pruned Pearson r is below this is fragile."""
    frequency_bins: int = declare(whole(2, 100, "RQ2 and RQ5: firing-rate bins; a rank "
                                        "correlation needs 2"), N_BINS)
    """RQ2 and RQ5: equal-count firing-rate bins of the dense SAE's alive features."""
    causal_features_per_bin: int = declare(whole(1, 10_000, "RQ5: features ablated per bin"),
                                           20)
    """RQ5: features sampled per firing-rate bin and ablated one by one."""
    causal_sequences: int = declare(whole(0, 10**6, "RQ5: eval sequences of the ablations, 0 "
                                          "for all"), 0)
    """RQ5: evaluation sequences the ablations run on, from the first; 0 for all. Each sampled
    feature costs a forward over the sequences it fires in, above the probe layer."""
    sanity_l0_rel: float = declare(number(0.0, 1.0, "the shipped SAEs' L0 band as a fraction: "
                                          "0.25 is 25 %; at 1 the band's low edge is 0",
                                          high_open=True), 0.25)
    """Sanity gate: a pre-trained SAE's L0 on its dense model within this fraction of what its
    publisher recorded (repro.outputs.sanity.sanity_gates)."""
    sanity_ev_abs: float = declare(number(0.0, 1.0, "the shipped SAEs' explained-variance "
                                          "band"), 0.05)
    """Sanity gate: a pre-trained SAE's explained variance within this of its publisher's."""
    curve_flat_ev_gain: float = declare(number(0.0, 1.0, "the explained variance an SAE may "
                                               "still gain over its last quarter of training "
                                               "and count as trained enough"), 0.01)
    """An SAE whose explained variance still rose by this or more over its last quarter of
    training tokens has not flattened (repro.science.training_curves). At 0.01, another
    quarter of tokens buys about one more point of explained variance, the size of the
    differences the report reads between SAEs (RQ3 compares the explained variances of SAEs
    on dense and pruned models), so such an SAE's numbers move with its token budget."""

    predictability_folds: int = declare(whole(0, 20, "RQ6 (T7): cross-validation folds of "
                                              "the survival predictions; 0 leaves RQ6 out"), 0)
    """RQ6, beyond the paper (repro.science.predict): folds of the cross-validated logistic
    regression that predicts each feature's survival from the dense model alone; 0 builds no
    T7. At least 2."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.predictability_folds == 1:
            raise ReproError("[thresholds] predictability_folds = 1: cross-validation needs 2 "
                             "or more folds; write 5, or 0 to leave RQ6 out")
        # a number field written as a whole number (fragile_r = 1) is still a float
        for f in fields(self):
            if f.type == "float":
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
