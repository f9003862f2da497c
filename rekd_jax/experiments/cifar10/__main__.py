"""`python -m rekd_jax.experiments.cifar10`: the study's command line (study.main)."""

import sys

from rekd_jax.core import errors
from rekd_jax.experiments.cifar10 import study

sys.exit(errors.run_cli(study.main, debug=False))
