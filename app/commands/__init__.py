"""Subcommands of `python -m engine` that need the web layer (app.workbench), one module each,
with the same `add_arguments(parser)` / `run(args)` contract as engine/commands/. The engine never
imports app itself: its command line offers these when this package is importable (a checkout),
and an engine-only install simply has no such commands."""
