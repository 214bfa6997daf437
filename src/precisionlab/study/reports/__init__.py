"""Presentation, one module per chapter topic: figures, display tables and glued prose texts.

A report module takes the tidy tables of `precisionlab.study.experiments` and turns them into what a
chapter shows: figures in the house style (`precisionlab.study.plotting`, labelled axes with units,
signed with the hardware that measured them), formatted tables and the "facts" its prose glues
in. It measures nothing. This package imports none of its modules, so a chapter depends only
on the reports it uses.
"""
