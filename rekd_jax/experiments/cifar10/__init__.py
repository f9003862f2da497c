"""The CIFAR-10 study: does ReKD beat MoCo v2 and SEED when the teacher knows something?

    python -m rekd_jax.experiments.cifar10 --scale=cpu --workdir=/tmp/c10_study \
        --data_dir=/data/tfds [--src=/data/cifar10]

One command, one resumable workdir (rerunning skips finished runs; an interrupted run resumes
from its checkpoints); progress lines carry an ETA. Stages, each a set of rows (plan.Arm):
  teachers   a MoCo v2 teacher on the whole training split, with encoder snapshots at
             scale.teacher_snapshots of its steps, and a supervised cross-entropy teacher
             trained on the labelled part of the split only (an ORACLE ABLATION), each beside
             the random-init encoder; scored on the test split.
  search     on a validation split carved from the training set (val_split, scored against
             val_bank_split): the free choices of our ReKD reading (READINGS) and SEED's
             temperatures (SEED_TEMPERATURES, a search of the same size), one run each at the
             middle learning rate of the grid for scale.search_steps steps (a shorter proxy of
             the student budget); the best validation kNN wins.
  grid       each method (TUNED: MoCo v2, SEED and ReKD, from the MoCo v2 teacher) at every peak
             lr of scale.lr_grid, on validation; the best validation kNN wins per method. The
             arms that follow a method take its lr (LR_FOLLOWS).
  more_search  as the search: ReKD in the teacher's space (space_readings: beta x k, an
             extension), the chosen reading's temperature x k and its miner's input
             (long_readings); 'rekd_long', the best ReKD reading of every ReKD search, is what
             the budget axis and the k-positive control run.
  lr_edge    each tuned method whose lr sits at the top of the grid, one step above it
             (edge_lr), at the full student budget on validation: the longer runs' lr.
  final      each arm of ARMS at its chosen settings over scale.seeds seeds (a tuned method's
             seed 0 is its grid run, re-scored), scored on the test split: mean and spread,
             ReKD's margins over MoCo v2 and SEED.
  budget     BUDGET_ARMS (and rekd_space when it beat ReKD's reading on validation) at
             scale.budget_steps with scale.budget_seeds seeds, each cosine over its own
             length: test scores against epochs, and each distilled arm's gain over MoCo v2
             against its teacher's lead (lead_summary).
  quality    SEED and ReKD distilled from each teacher snapshot (scale.quality_seeds seeds):
             the gain over MoCo v2 against the teacher's mined-positive label precision.
  students   the five students (AlexNet, MobileNetV3-L, ShuffleNetV2, EfficientNet-B0,
             ResNet-18): random init, MoCo v2, SEED, ReKD at the chosen settings, one seed.
`--stages` runs some of them; `--dry_run` prints the plan (study.plan_text).
No choice reads a test number: every choice is made by `summary.choose` on validation rows.
WORKDIR/results.json holds every row, the choices and the summaries (results.md the tables,
plots/ the figures; `python -m rekd_jax.tools.report WORKDIR/results.json` redraws them).

The package, by concern: scales.py (the scales' table, SCALES), settings.py (the arms, what
each follows, the searched settings, run names), arms.py (the runs of each stage as plan.Arms),
summary.py (choices and statistics from rows), study.py (the run loop and the command line);
the tables and figures are rekd_jax.tools.study_report and rekd_jax.tools.study_figures.

Scales (each field of Scale is a documented departure from rekd_jax.recipes.cifar10(),
the MoCo CIFAR-10 demo):
  tiny  seconds; rekd_shapes/tiny, a reduced search; what the tests run.
  cpu   two CPU cores: CIFAR-10 at 16 px, all 50,000 training images (45,000 / 5,000 for
        validation), batch 256; ResNet-18 x0.25 teachers (MoCo v2 12,000 steps, cross-entropy
        6,000 steps); AlexNet x0.25 students, 1,500 steps (7.7 epochs; the search: 500), on
        the budget axis 6,000 and 15,000. docs/results.md has the times.
  gpu   full CIFAR-10 at 32 px, full widths, 200 teacher epochs, an AlexNet mechanism student
        (lightweight, not the teacher's architecture), 50 student epochs and on the budget
        axis 200 and 500 (not measured; --dry_run prices it).
"""
