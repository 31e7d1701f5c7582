"""Auditor tools over a run folder: SQL over the manifests (query) and the funnel report (report)."""
