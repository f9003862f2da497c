"""Recipe configs, one file per recipe (`python main.py --help` lists them); installed with the
package as rekd_jax.configs."""
