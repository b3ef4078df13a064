"""`python -m serving.cli`: the `leadscore` command."""
import sys

from serving.cli import app

sys.exit(app())
