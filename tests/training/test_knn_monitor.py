"""The pre-training kNN monitor scores the splits it is given: knn_monitor.bank_split /
query_split replace the data splits, so a validation split carved from the training set keeps
the monitor off the test split."""

import jax

from configs import default
from rekd_jax.training import pretrain
from rekd_jax.training import state as state_lib


def test_monitor_reads_the_bank_and_query_splits(tmp_path):
    config = default.get_config("tiny,runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    config.knn_monitor.update(k=1, batch_size=32)
    modules = state_lib.build_modules(config)
    variables = modules.student.init(
        jax.random.PRNGKey(0), jax.numpy.zeros((1, 16, 16, 3)), train=False
    )
    test_split = pretrain.knn_monitor(config, modules, variables)["knn/top1"]
    # Querying a bank that holds the query images themselves: each is its own 1-NN.
    config.knn_monitor.update(bank_split="train[:60]", query_split="train[:60]")
    assert pretrain.knn_monitor(config, modules, variables)["knn/top1"] == 1.0
    assert test_split < 1.0
