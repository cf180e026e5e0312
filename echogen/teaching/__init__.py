"""Teaching and review modes: case pools for an eyeball-EF trainer, blinded real-vs-generated review
sets, a results database, and the statistics of both. See docs/TEACHING.md.

- media   : the shared video spec, real clips fitted to it, random names, hashes
- pool    : build_pool / add_real_clips / load_pool (bounded by PoolLimits, cancellable through a guard)
- gate    : the pool quality gate: EF readers (regressor, LV tracer when present) and verify
- review  : build_review_set / load_review_set (the key kept apart; real clips from a dataset or uploads)
- db      : ResultsDB (SQLite, WAL, safe for concurrent writers)
- stats   : EF categories, MAE / bias, Bland-Altman, exact binomial test, kappas, CSV
- summary : trainer / review summaries from stored answers
- sessions: per-case logic of a session (draw cases, score, store) for the app and scripts
"""
