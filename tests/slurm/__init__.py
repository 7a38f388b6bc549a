# A package, so that its conftest.py is imported as slurm.conftest and leaves the name
# `conftest` (tests/conftest.py, which other test modules import from) alone.
