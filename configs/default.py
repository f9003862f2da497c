"""Default pre-training config: MoCo v2, ResNet-18, on the embedded rekd_shapes dataset.

The base every recipe config starts from: rekd_jax.recipes.base_config(), whose docstring
describes every field. Each recipe calls it and changes fields (inheritance by calling).

Command: python main.py --config=configs/default.py --workdir=/tmp/default
Hardware / time: one GPU; 200 epochs of the 10,000-image rekd_shapes set at batch 256 is 7,800
steps of a CIFAR-stem ResNet-18 (an estimate: well under an hour on one H100; not measured).
Laptop CPU: --config=configs/default.py:tiny,runlocal (8 steps on rekd_shapes/tiny, about a
minute). Variants (rekd_jax.variants rules: in the order given, runlocal last): tiny (the
embedded toy data), runlocal (shrink steps and sizes, keep the dataset).
Expected result: none claimed; this is the base the recipe configs change, not a recipe.
"""

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.BASE_VARIANTS
get_config = config_getter(recipes.base_config, VARIANTS, "configs/default.py")
