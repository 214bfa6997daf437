"""The study: named tasks, statistics, the experiments each chapter runs, the rules that judge
their tables and the reports that present them; claims, the ledger and the audit.

Imports the numerics (`precisionlab.formats`, `amp`, `quant`, ...), never the engine.
Experiments compute; rules judge tables; reports present: rules and reports never import
experiments (the names they share live in `designs`). Imports nothing eagerly.
"""
