"""`repro bench`: the hot paths timed against their reference twins, and the budget estimate.

`run` is the command; `paths` holds each timed path beside the reference that does the same
work; `saelens` trains the same SAE through sae-lens's own runner; `real` repeats the
measurements on SmolLM2; `arithmetic` times pinned and native float32 and bfloat16 in
subprocesses; `estimate` and `report` turn them into the study's budget;
`paper_configs` declares the paper's three architectures so they can be built without
weights. May import every layer below (`repro.outputs` excepted: it needs none).
"""
