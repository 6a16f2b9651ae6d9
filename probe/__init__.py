"""probe: did a fine-tuned transformer learn its task, or a task-irrelevant shortcut?

Public API (heavy libraries are imported only when a function runs)::

    import probe
    run = probe.run("examples/default.yaml", finetune__epochs=1)
    run.summary["verdict"], run.table("probing")
    probe.load_run("reports/default")
    probe.linear_cka(X, Y)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["run", "load_run", "load_config", "render_report", "linear_cka", "ProbeError", "Run", "__version__"]


def __getattr__(name: str):
    if name == "run":
        from probe.pipeline import run

        return run
    if name in ("load_run", "Run"):
        from probe import rundir

        return getattr(rundir, name)
    if name == "load_config":
        from probe.config import load_config

        return load_config
    if name == "render_report":
        from probe.report.render import render_report

        return render_report
    if name == "linear_cka":
        from probe.analyses.similarity import linear_cka

        return linear_cka
    if name == "ProbeError":
        from probe.errors import ProbeError

        return ProbeError
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
