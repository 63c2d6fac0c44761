"""``python -m medequity`` = the ``medequity`` command (e.g. from a job script without the venv on PATH)."""

from medequity.cli import app

app()
