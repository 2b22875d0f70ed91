"""A training run's state on disk: its folder's files (workdir.py, the one schema), its Orbax
checkpoints (orbax_io.py: asynchronous saves, the checked restore) and their health
(health.py: damaged step folders moved aside, writability, fit to the config)."""
