"""What a finished run gives a reader: tables, figures, claims, the report and the verdict.

`analysis` reads the stored runs and answers the five research questions; `claims`, `tables`,
`figures` (styled by `figure_style`) and `report` (with `report_curves`) present them;
`expected`, `verify` (`verify_text` words the result) and `bless` compare a run with stored
expected outputs; `finish` runs all of this as the study-level stages at the end of a run.
May import every layer below it (`repro.stages`, `repro.science`, `repro.inputs`,
`repro.study`) and the foundations.
"""
