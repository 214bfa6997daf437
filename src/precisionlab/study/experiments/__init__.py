"""The measurements each chapter runs, returning tidy DataFrames (one row per run or probe).

One module per chapter topic; this package imports none of them, so a chapter depends only on
the experiments it uses.
"""
