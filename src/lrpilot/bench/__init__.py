"""Benchmark tasks and a plain training loop (optional extra ``lrpilot[bench]``; the core never imports this)."""
