"""Verdict rules, one function per claim, one module per chapter topic.

A rule takes the tidy tables a chapter's experiments return and gives a `claims.Finding`: the
verdict word, a one-line reason that states what the data say (the unwelcome part too), and the
label of the evidence. Rules are pure and unit-tested on small synthetic tables that reach every
verdict they can return. This package imports none of its modules, so a chapter depends only on
the rules it uses.
"""
