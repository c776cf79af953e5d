"""Diagnostics of gradient estimators: analytic and empirical bias and variance."""
