"""Stages: a config dataclass + a function (or a class with `setup()` for a model) over Arrow tables."""
