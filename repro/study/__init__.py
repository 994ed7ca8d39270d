"""The study: what a run measures, declared in one file.

`spec` holds the typed, frozen dataclasses (models, conditions, SAE, data streams,
thresholds) with their validation; `reader` turns a study file (`studies/*.toml`, or any
`--study FILE`) into them, with one-line errors that name the field; `locations` writes
the paths it resolved into the package as `repro/...` wherever outputs record them. Imports
nothing from repro but `repro.errors`: every other layer may use it.
"""
