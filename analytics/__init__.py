"""Customer analytics: RFM scores, rule-based segments, lifetime value and churn risk.

Pure logic lives in the modules of this package (no I/O): :mod:`analytics.rfm` (quintile breakpoints and scores),
:mod:`analytics.rules` (the segment rules and their validation), :mod:`analytics.btyd` (the buy-till-you-die
closed forms), :mod:`analytics.snapshot` (one refresh over the whole customer base). The adapters are
:mod:`analytics.fit` (model fitting with ``lifetimes``), :mod:`analytics.rules_file` (hot-reloaded rules file),
:mod:`analytics.store` (Redis) and :mod:`analytics.refresh` (the periodic job). See ``docs/analytics.md``.
"""
