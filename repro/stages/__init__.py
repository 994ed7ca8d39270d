"""The stages: science bound to folders, so that a killed run resumes where it stopped.

`store` runs a stage into its folder and records a manifest (input hash, output hashes,
provenance), `locks` keeps two processes off one stage, `codehash` puts a stage's code into
its input hash, `provenance` and `launch` record and shard the work. `context` is the shared
bottom of the stage modules (where, on what device, the loaded model, token loading, the
out-of-memory retry); `pipeline` holds the per-model and per-variant stages (tokens, prune,
perplexity, activations), `run_stages` the per-run ones (SAE, evaluation), and `run` the
order they run in. May import `repro.science`, `repro.inputs`, `repro.study` and the
foundations; no stage module imports another except through `context` and `run`.
"""
