"""The bands of `repro bless` written out: this profile's sections of tolerances.toml, each band
with the spread it was made from, its multiple and what it means (repro.outputs.bands makes
the numbers, this module the text)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from repro.outputs import ranges
from repro.outputs.bands import (
    ACROSS_MULTIPLE,
    FLOOR_ABS,
    FLOOR_REL,
    RESOLUTION,
    Across,
    ColumnSd,
    Sd,
    Tables,
    claim_band,
    claim_on_log_scale,
    claim_sds,
    claim_table,
    column_band,
    column_scales,
    column_sds,
    feature_floors,
    widening,
)
from repro.outputs.expected import ClaimSpec
from repro.outputs.multiples import MIN_MULTIPLE, LeaveOneOut
from repro.outputs.scales import LINEAR, LOG, SCALES, log_factor


def _per_table(value: float | Mapping[str, float], table: str) -> float:
    if isinstance(value, Mapping):
        return value.get(table, max(value.values()))  # a claim of no known table: the widest
    return value


def tolerances_text(profile: str, tables: list[Tables], claims: list[dict],
                    specs: list[ClaimSpec], multiple: float | Mapping[str, float],
                    trials: list[LeaveOneOut] | Mapping[str, list[LeaveOneOut]],
                    source: str, across: dict[tuple[str, str], Across] | None = None) -> str:
    """This profile's sections of tolerances.toml, each band with its measured spread; a
    column the replicates do not move takes its band from `across` where it was measured.
    `multiple` and `trials` are one for every table, or each table's (`choose_multiples`)."""
    n = len(tables)
    by_table = trials if isinstance(trials, Mapping) else {"every table": trials}
    rates = [f"#   {name}: " + ", ".join(f"{t.multiple:g}x {t.failed}/{t.checked}" for t in tried)
             for name, tried in by_table.items()]
    lines = [f"# [{profile}.*] written by `repro bless` from {n} replicates of {source}:",
             "# each band is MULTIPLE x the replicates' sd pooled over a model's rows (a",
             "# claim: its sd), `models` the band of each model's rows (abs: the widest), with a",
             f"# floor of abs {FLOOR_ABS:g} + rel {FLOOR_REL:g}; a ratio's (`log`) on the log",
             "# scale, a rate's (`angle`) on the arcsine-square-root scale, in radians, a",
             "# p-value's (`z`) on the normal-quantile scale, never narrower than a rate's",
             "# floor in features (`abs`): repro/outputs/scales.py.",
             "# Each table's MULTIPLE (its claims take it too) is the smallest at which",
             "# every replicate verifies against bands made from the others (leave-one-out",
             "# failures per multiple:", *rates,
             f"# ) times sqrt(2/{n}) / sqrt(1 + 1/{n - 1}): verify compares a mean of {n} with a",
             f"# mean of {n}, not one replicate with the mean of {n - 1} (never below "
             f"{MIN_MULTIPLE:g}).",
             "# Columns exact by construction have no entry and must match exactly.", ""]
    scales = column_scales(tables)
    sds, floors = column_sds(tables, scales), feature_floors(tables[0], n)
    for name in tables[0]:
        lines.append(f'["{profile}"."{name}"]')
        for (table, col), by_model in sds.items():
            if table == name and across and (table, col) in across:
                lines.append(f"{col} = " + _across_entry(across[(table, col)]))
            elif table == name:
                lines.append(f"{col} = " + _column_entry(by_model, n, _per_table(multiple, name),
                                                          floors.get((table, col), 0.0),
                                                          ranges.column_range(col),
                                                          scales[(table, col)]))
        lines.append("")
    lines.append(f'["{profile}"."claims"]')
    for spec in specs:
        claim_sd = claim_sds(claims, [spec]).get(spec.name)
        if claim_sd is not None:
            floor = RESOLUTION.get(f"{spec.claim}.{spec.field}", 0.0)
            m = _per_table(multiple, claim_table(spec))
            lines.append(f"{spec.name} = " + _entry(claim_band(spec, claim_sd, m), claim_sd, n,
                                                     m, "sd", floor,
                                                     ranges.CLAIM_RANGES.get(spec.claim),
                                                     LOG if claim_on_log_scale(spec) else LINEAR))
    return "\n".join(lines) + "\n"


def _across_entry(found: Across) -> str:
    rel = max(FLOOR_REL, ACROSS_MULTIPLE * found.rel)
    note = ("not moved by the replicates; across arithmetic settings the largest relative "
            f"difference {found.rel:.3g} ({found.where}); band {ACROSS_MULTIPLE:g}x" if found.where
            else "not moved by the replicates nor across the arithmetic settings compared")
    return f'{{ abs = {FLOOR_ABS:g}, rel = {rel:.3g}, note = "{note}" }}'


def _column_entry(by_model: ColumnSd, n: int, multiple: float, floor: float,
                  bounds: tuple[float, float] | None, scale: str = LINEAR) -> str:
    """A column's band: the widest model's, with every model's own band beside it when the
    column has rows of more than one model."""
    per_model = {model: column_band(sd, multiple, floor, scale) for model, sd in by_model.items()}
    widest = max(per_model, key=lambda model: per_model[model])
    what = "pooled sd over rows" + (f" of {widest} (the widest)" if widest else "")
    entry = _entry(per_model[widest], by_model[widest], n, multiple, what, floor, bounds, scale)
    if len(per_model) < 2:
        return entry
    models = ", ".join(f'"{m}" = {b:.3g}' for m, b in sorted(per_model.items()))
    return entry[:-2] + f", models = {{ {models} }} }}"


def _entry(band: float, sd: Sd, n: int, multiple: float, what: str,
           floor: float = 0.0, bounds: tuple[float, float] | None = None,
           scale: str = LINEAR) -> str:
    """One band of tolerances.toml with a note saying where it comes from; a band at least as
    wide as the quantity's whole range (`bounds`) says that it checks nothing; `scale`: the
    scale the band and sd are on (repro.outputs.scales), written as its key (`log = ...`)."""
    on_scale = scale != LINEAR and sd.value > 0
    of = f" of {SCALES[scale].what}" if scale != LINEAR else ""
    if sd.value == 0 and not floor:
        note = f"not moved by {n} replicates: the round-off floor"
    else:
        note = (f"{what} {sd.value:.3g}{of} over {n} replicates ({sd.dof} dof, widened "
                f"x{widening(sd.dof):.2f}); band {multiple:.3g}x")
        if floor and on_scale:
            note += f", never narrower than +-{floor:.3g} (its floor in features)"
        elif floor and floor >= multiple * sd.widened:
            note += f", raised to its floor ({floor:.3g})"
    whole = SCALES[scale].span[1] - SCALES[scale].span[0] if on_scale else \
        bounds and bounds[1] - bounds[0]
    if bounds is not None and whole is not None and band >= whole:
        note += (f"; wider than every value in [{bounds[0]:g}, {bounds[1]:g}]: verify reports "
                 "it UNCHECKED")
    if scale == LOG and on_scale:
        note += f"; times or divided by {log_factor(band):.3g}"
    if on_scale:
        return (f'{{ abs = {max(FLOOR_ABS, floor):.3g}, rel = {FLOOR_REL:g}, '
                f'{scale} = {band:.3g}, note = "{note}" }}')
    return f'{{ abs = {max(band, floor):.3g}, rel = {FLOOR_REL:g}, note = "{note}" }}'


_PROFILE_HEADER = re.compile(r"# \[(?P<profile>[^\].]+)\.\*\]")
"""The first line of the comment block `repro bless` writes above a profile's sections."""


def keep_other_profiles(existing: str, profile: str) -> str:
    """An existing tolerances.toml without this profile's sections and their comment block
    (the rest verbatim): a section, or a profile's header comment, starts what is dropped or
    kept, so the header of the profile after this one's sections is kept."""
    kept, skipping = [], False
    for line in existing.splitlines():
        header = _PROFILE_HEADER.match(line)
        if line.startswith("["):
            skipping = line.startswith((f'["{profile}".', f"[{profile}."))
        elif header:
            skipping = header["profile"] == profile
        if not skipping:
            kept.append(line)
    return "\n".join(kept).rstrip() + "\n"
