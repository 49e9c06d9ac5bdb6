"""Watching a deployed model: the baseline the pipeline computes at evaluation time, and the
monitoring job that compares captured traffic and web users' feedback with it."""
