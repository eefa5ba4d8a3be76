"""Studies built on the library: experiments with their protocol, pass criteria and report.

* :mod:`lrpilot.bench.studies.late_decay` -- ``lrpilot late-decay``: the late-decay toy reproduction and the
  MNIST-1D study.
"""
