"""The book engine: the runner, cache keys (`staleness`), the chapter registry, sweeps, the
Sphinx extension, the PDF, notebook checks and every command (`cli`).

It executes notebooks and knows no experiment: it never imports `study.experiments`,
`study.rules` or `study.reports`. Imports nothing eagerly.
"""
