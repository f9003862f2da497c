"""Quick start: a MoCo v2 teacher, then ReKD, SEED and MoCo v2 students, on a CPU.

Command (the README's main command):
  python main.py --config=configs/quickstart.py --workdir=/tmp/qs
What it does, on the embedded rekd_shapes dataset (built on first use, no download):
  0. random init: the untrained teacher and student architectures, scored like the rest
  1. teacher:  MoCo v2, CIFAR-stem ResNet-18 at width 0.125, 1,700 steps on 12 px views
  2. student:  ReKD (offline, from the teacher just trained), CIFAR-stem AlexNet (with BN) at
               width 0.25, 700 steps
  3. seed:     SEED from the same teacher, the same AlexNet, steps and recipe
  4. baseline: the same AlexNet with plain MoCo v2, the same steps and recipe
  5. kNN (k 200, tau 0.1) and a fast linear probe of every encoder (rekd_jax.evaluation) at
     16 px, a table with each row's gain over its random init and the label precision of
     ReKD's mined positives, the checks of rekd_jax.experiments.quickstart (each with its value
     and whether it holds; ReKD's margins over SEED and MoCo v2 beside them), and
     WORKDIR/results.json.
Variants (VARIANTS, comma-separated, e.g. `:tiny,seeds`; each changes the whole plan):
`:seeds` runs the quick start once per seed of SEEDS (WORKDIR/seed_<N>) and prints each row's
mean and [min, max]; `:lr_grid` chooses the students' peak lr (LR) from LR_GRID on a validation
split (train[:9000] as the bank and probe training set, train[9000:] scored; the best
validation kNN per method); `:x4` trains the students four times longer (2,800 steps, each
cosine over its own length; the teacher as it is), the quick start's budget probe (with
`:seeds`: docs/results.md#quick-start); `:tiny` (rekd_shapes/tiny, a few steps per stage) is
what the tests run. `--config.rng_seed=N` reseeds every stage.
Recipe (every value a field; departures from configs/default.py): 16 px views of the 32 px
images, batch 128, queue 8 batches (1,024 keys, at most 8 steps old), warmup-free cosine, wd
5e-4, m 0.99, tau 0.2, no blur, SimCLR's colour distortion of strength 1 (jitter
0.8/0.8/0.8/0.2, p 0.8; grayscale p 0.2; Chen et al. 2020, Appendix A), because object colour
is the embedded data's main nuisance; ReKD's prototype reading (relation 'prototype', 100
prototypes; the library default is 'topk'). Peak lr at batch 128, not scaled: teacher
0.06; students from the validation grid: ReKD 0.02, SEED 0.04, MoCo v2 0.08 (MoCo v2 collapses
at 0.16). The teacher trains on 12 px views (0.56x the compute of 16 px) and is evaluated, and
mines the students' relations, at 16 px. The students train 700 steps: a MoCo v2 AlexNet first
lowers kNN below its random init's before raising it.
Hardware / time and expected result: 2-core x86 CPU, Python 3.11, jax 0.10.2: 5 min 14 s wall
(508 CPU-s) with the dataset build and an empty compilation cache, 4 min 46 s (460 CPU-s) with a
warm cache. kNN / linear, mean [min, max] over seeds 0-2: teacher 53.6 [49.4, 58.6] / 61.8
[55.6, 66.8], ReKD 54.3 [52.8, 55.2] / 64.2 [62.8, 66.8], SEED 55.7 [52.1, 58.0] / 68.1 [63.1,
71.1], MoCo v2 35.9 [24.4, 47.5] / 48.5 [40.6, 57.2]; the README's table, docs/results.md.
"""

from rekd_jax.recipes import quickstart as quickstart_recipe
from rekd_jax.recipes.quickstart import LR, LR_GRID, SEEDS, VARIANTS  # noqa: F401 (help, docs)


def get_config(arg=None):
    return quickstart_recipe.get_config(arg, "configs/quickstart.py")
