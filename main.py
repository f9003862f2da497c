"""Entry point of a clone: `python main.py --config=configs/NAME.py[:VARIANT] --workdir=DIR`.

The same command as the console command `rekd-jax` that `pip install` provides (rekd_jax.cli:
flags, config lookup, console, compilation cache, Ctrl-C); `python main.py --help` lists the
configs, their variants, overrides and outputs.
"""

from rekd_jax import cli

if __name__ == "__main__":
    cli.main()
