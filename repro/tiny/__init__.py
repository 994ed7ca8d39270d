"""`repro build-tiny-assets`: builds what the tiny profile ships in repro/assets/tiny/.

`build` generates the corpus (text from `repro.inputs.tiny_corpus`), trains the tokenizer
(`tokenizer`) and the three tiny models (`train`), then the shipped SAEs
(`repro.science.pretrained_saes`). A tool above the science: it may import every layer
below `repro.stages`, and nothing imports it.
"""
