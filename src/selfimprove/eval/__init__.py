"""Evaluation: metrics over verified answers, and reports."""
