"""The papers' evaluations and report writers, one module per experiment; each exposes
``main(argv=None)`` (flags from its dataclass config) and ``scripts/`` holds thin entry points.

- :mod:`~experiments.reading` (E1, E2, E3, E8, E9; numbers in :mod:`~experiments.reading_eval`
  and :mod:`~experiments.reading_categories`, page in :mod:`~experiments.reading_report`, its
  verdict rules in :mod:`~experiments.reading_verdicts`)
- :mod:`~experiments.probe_comparison` (E4: trained probes vs sign prototypes)
- :mod:`~experiments.causal` (E5 K/V survival, E6 FFN writers; E7 in
  :mod:`~experiments.sign_flips`; page in :mod:`~experiments.causal_report`, its verdict rules
  in :mod:`~experiments.causal_verdicts`)
- :mod:`~experiments.input_comparison` (what a token is read after),
  :mod:`~experiments.category_coverage` (usable categories per tokenizer)
- :mod:`~experiments.category_lists` (generates the shipped category lists, with
  :mod:`~experiments.closed_lists` and :mod:`~experiments.wordnet_files`)
- shared: :mod:`~experiments.runs` (run folders, the report-folder rule, the sign cache) and
  :mod:`~experiments.report` (atomic files, summaries, formatting, plots)

Reports go to ``runs/<model>/reports`` unless ``--write-reports`` (the tracked ``reports/<model>``)
or ``--out DIR`` is given.
"""
