"""runbook_lib: the library behind the live-migration runbook notebooks.

Modules, one concern each: :mod:`params` (site parameter sets), :mod:`remote` (SSH to
hosts; the only module that imports Fabric), :mod:`facts` (commands + pure parsers),
:mod:`checks` (verdicts), :mod:`report` (what notebooks show), :mod:`runner` and
:mod:`archive` (headless runs and the audit trail), :mod:`lab` (the embedded lab).
"""

__version__ = "0.1.0"
