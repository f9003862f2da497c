"""Each method's loss_fn: pmap on 4 devices equals one device on the concatenated batch (loss,
gradients w.r.t. the student query, metrics, new state), plus configs and ReKD specifics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.methods import get_method, losses, mocov2, rekd, relation, seed

DEVICES, LOCAL = 4, 2
GLOBAL = DEVICES * LOCAL


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_embeddings(method, step):
    rng = np.random.default_rng(100 + step)
    if method == "mocov2":
        return {"q": unit_rows(rng, GLOBAL, 6), "k": unit_rows(rng, GLOBAL, 6)}
    if method == "seed":
        return {"z_s": unit_rows(rng, GLOBAL, 5), "z_t": unit_rows(rng, GLOBAL, 5)}
    return {
        "q": unit_rows(rng, GLOBAL, 6),
        "k": unit_rows(rng, GLOBAL, 6),
        "t": unit_rows(rng, GLOBAL, 3),
        "labels": rng.integers(-1, 3, GLOBAL).astype(np.int32),
    }


STUDENT_INPUT = {"mocov2": "q", "seed": "z_s", "rekd": "q"}
DIMS = {"mocov2": (6, None), "seed": (5, 5), "rekd": (6, 3)}


def make_step(module, cfg, student_input, axis_name):
    def step(embeddings, state, rng):
        def loss_of(student):
            return module.loss_fn(
                dict(embeddings, **{student_input: student}),
                state,
                cfg,
                rng=rng,
                axis_name=axis_name,
            )

        (loss, (metrics, new_state)), grad = jax.value_and_grad(loss_of, has_aux=True)(
            embeddings[student_input]
        )
        return loss, grad, metrics, new_state

    return step


def shard(tree):
    return jax.tree.map(lambda x: x.reshape(DEVICES, LOCAL, *x.shape[1:]), tree)


def replicate(tree):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (DEVICES, *x.shape)), tree)


def small_config(method, **overrides):
    cfg = get_method(method).default_config()
    cfg.queue_size = 16
    if method == "rekd":
        cfg.relation = "prototype"
        cfg.num_prototypes = 4
        cfg.reseed_after = 2
        cfg.relation_threshold = 0.2
        cfg.relation_topk = 3
        cfg.lambda_inst = 0.5
    cfg.update(overrides)
    get_method(method).validate_config(cfg, GLOBAL)
    return cfg


def assert_trees_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6), a, b)


CASES = [
    ("mocov2", {}),
    ("seed", {}),
    ("rekd", {}),
    ("rekd", {"assignment": "sinkhorn", "relation": "topk"}),
]


@pytest.mark.parametrize("method,overrides", CASES)
def test_pmap_equals_one_device_on_the_global_batch(method, overrides):
    module = get_method(method)
    cfg = small_config(method, **overrides)
    student_input = STUDENT_INPUT[method]
    single_step = jax.jit(make_step(module, cfg, student_input, None))
    pmap_step = jax.pmap(make_step(module, cfg, student_input, "batch"), axis_name="batch")
    state = module.init_state(jax.random.PRNGKey(0), cfg, *DIMS[method])
    single_state, pmap_state = state, replicate(state)
    for step in range(3):  # 3 steps of 8 fill the 16-row queue and wrap around
        embeddings = make_embeddings(method, step)
        rng = jax.random.PRNGKey(10 + step)
        # Per-device keys that differ: only the first device's key may matter.
        rngs = jnp.stack([rng, *jax.random.split(jax.random.PRNGKey(99 + step), DEVICES - 1)])
        loss, grad, metrics, single_state = single_step(embeddings, single_state, rng)
        p_loss, p_grad, p_metrics, pmap_state = pmap_step(shard(embeddings), pmap_state, rngs)
        np.testing.assert_allclose(np.mean(p_loss), loss, rtol=2e-5)
        # Each device averages over its own rows: its gradient is DEVICES x the global one.
        np.testing.assert_allclose(
            np.asarray(p_grad).reshape(grad.shape) / DEVICES, grad, rtol=2e-4, atol=1e-7
        )
        for device in range(DEVICES):
            assert_trees_close(jax.tree.map(lambda x, d=device: x[d], p_metrics), metrics)
            assert_trees_close(jax.tree.map(lambda x, d=device: x[d], pmap_state), single_state)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
        assert float(jnp.max(jnp.abs(grad))) > 1e-4
    queued = {"mocov2": ("key", "k"), "seed": ("teacher", "z_t"), "rekd": ("teacher", "t")}
    field, name = queued[method]
    # After 3 steps: rows 0..7 hold step 2's global batch (wrapped), rows 8..15 step 1's.
    np.testing.assert_allclose(single_state["queue"][field][:8], make_embeddings(method, 2)[name])
    np.testing.assert_allclose(single_state["queue"][field][8:], make_embeddings(method, 1)[name])


def test_rekd_first_step_has_only_the_own_key_and_later_steps_mine_relations():
    cfg = small_config("rekd")
    step = jax.jit(make_step(rekd, cfg, "q", None))
    state = rekd.init_state(jax.random.PRNGKey(0), cfg, 6, 3)
    _, _, metrics, state = step(make_embeddings("rekd", 0), state, jax.random.PRNGKey(1))
    np.testing.assert_allclose(metrics["positives_per_anchor"], 1.0)
    np.testing.assert_allclose(metrics["loss_rel"], metrics["loss_inst"], rtol=1e-6)
    assert bool(state["prototypes"]["initialized"])
    np.testing.assert_array_equal(
        state["queue"]["label"][:GLOBAL], make_embeddings("rekd", 0)["labels"]
    )
    embeddings = make_embeddings("rekd", 1)
    loss, _, metrics, _ = step(embeddings, state, jax.random.PRNGKey(2))
    assert float(metrics["positives_per_anchor"]) > 1.5
    np.testing.assert_allclose(loss, metrics["loss_rel"] + 0.5 * metrics["loss_inst"], rtol=1e-6)
    # The relation loss is the relation_contrast of the mask recomputed by hand.
    queue, centers = state["queue"], state["prototypes"]["centers"]
    mask = relation.relation_positives(
        embeddings["t"],
        queue["teacher"],
        relation.assign(embeddings["t"], centers),
        relation.assign(queue["teacher"], centers),
        queue["valid"],
        "prototype",
        0.0,
        1,
    )
    np.testing.assert_allclose(
        metrics["loss_rel"],
        losses.relation_contrast(embeddings["q"], embeddings["k"], queue["key"], mask, 0.2),
        rtol=1e-6,
    )


def test_mocov2_loss_is_info_nce_and_metrics_are_sane():
    cfg = small_config("mocov2")
    state = mocov2.init_state(jax.random.PRNGKey(0), cfg, 6)
    embeddings = make_embeddings("mocov2", 0)
    loss, (metrics, new_state) = mocov2.loss_fn(embeddings, state, cfg, rng=None, axis_name=None)
    np.testing.assert_allclose(
        loss,
        losses.info_nce(embeddings["q"], embeddings["k"], state["queue"]["key"], 0.2),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        metrics["positive_similarity"],
        np.mean(np.sum(embeddings["q"] * embeddings["k"], 1)),
        rtol=1e-5,
    )
    assert 0.0 <= float(metrics["contrast_accuracy"]) <= 1.0
    assert int(new_state["queue"]["ptr"]) == GLOBAL


def test_default_configs_validate_and_bad_fields_are_named():
    for name in ("mocov2", "seed", "rekd"):
        get_method(name).validate_config(get_method(name).default_config(), 256)
    bad = [
        ("mocov2", {"temperature": 0.0}, "temperature"),
        ("mocov2", {"queue_size": 1000}, "queue_size"),
        ("seed", {"tau_t": -1.0}, "tau_t"),
        ("rekd", {"assignment": "kmeans"}, "assignment"),
        ("rekd", {"relation": "knn"}, "relation"),
        ("rekd", {"prototype_momentum": 1.0}, "prototype_momentum"),
        ("rekd", {"relation_topk": 0}, "relation_topk"),
        ("rekd", {"teacher": "frozen"}, "teacher"),
        ("rekd", {"num_prototypes": 0}, "num_prototypes"),
        ("rekd", {"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
    ]
    for name, overrides, field in bad:
        cfg = get_method(name).default_config()
        cfg.update(overrides)
        with pytest.raises(ValueError, match=field):
            get_method(name).validate_config(cfg, 256)
    cfg = rekd.default_config()
    cfg.lambda_instance = 1.0
    with pytest.raises(ValueError, match="lambda_instance"):
        rekd.validate_config(cfg, 256)
    with pytest.raises(ValueError, match="unknown method"):
        get_method("byol")


def test_init_states():
    cfg = small_config("rekd")
    state = rekd.init_state(jax.random.PRNGKey(0), cfg, 6, 3)
    assert state["queue"]["key"].shape == (16, 6) and state["queue"]["teacher"].shape == (16, 3)
    assert state["prototypes"]["centers"].shape == (4, 3)
    np.testing.assert_array_equal(state["queue"]["label"], -1)
    with pytest.raises(ValueError, match="must equal"):
        seed.init_state(jax.random.PRNGKey(0), small_config("seed"), 6, 5)


def test_rekd_oracle_relation_is_true_label_supcon_with_or_without_a_teacher():
    """relation='oracle': positives are the queue entries with the anchor's true label (the
    SupCon upper bound); with teacher 'none' the loss needs no teacher embeddings at all."""
    cfg = small_config("rekd", relation="oracle", lambda_inst=0.0)
    no_teacher = small_config("rekd", relation="oracle", lambda_inst=0.0, teacher="none")
    with_t = jax.jit(make_step(rekd, cfg, "q", None))
    without_t = jax.jit(make_step(rekd, no_teacher, "q", None))
    state_t = rekd.init_state(jax.random.PRNGKey(0), cfg, 6, 3)
    state_n = rekd.init_state(jax.random.PRNGKey(0), no_teacher, 6, None)
    assert "teacher" not in state_n["queue"] and state_n["prototypes"] == {}
    for step in range(3):
        embeddings = make_embeddings("rekd", step)
        plain = {k: v for k, v in embeddings.items() if k != "t"}
        loss_t, _, metrics_t, new_t = with_t(embeddings, state_t, jax.random.PRNGKey(step))
        loss_n, _, metrics_n, new_n = without_t(plain, state_n, jax.random.PRNGKey(step))
        queue = state_n["queue"]
        labels = embeddings["labels"]
        same = (labels[:, None] == np.asarray(queue["label"])[None, :]) & (labels[:, None] >= 0)
        mask = np.concatenate([np.ones((GLOBAL, 1), bool), same & np.asarray(queue["valid"])], 1)
        expected = losses.relation_contrast(
            embeddings["q"], embeddings["k"], queue["key"], mask, cfg.temperature
        )
        np.testing.assert_allclose(loss_n, expected, rtol=1e-6)
        np.testing.assert_allclose(loss_t, loss_n, rtol=1e-6)
        if step > 0:  # every mined positive shares the label: precision 1
            np.testing.assert_allclose(metrics_n["positive_label_precision"], 1.0)
            np.testing.assert_allclose(metrics_t["positive_label_precision"], 1.0)
            assert float(metrics_n["positives_per_anchor"]) > 1.0
        state_t, state_n = new_t, new_n
    np.testing.assert_array_equal(state_n["queue"]["label"], state_t["queue"]["label"])


def test_rekd_teacher_none_needs_the_oracle_relation():
    with pytest.raises(ValueError, match="teacher='none'.*relation='oracle'"):
        small_config("rekd", teacher="none")


def test_supervised_loss_is_cross_entropy_of_a_cosine_classifier():
    from rekd_jax.methods import supervised

    cfg = supervised.default_config()
    cfg.num_classes = 3
    supervised.validate_config(cfg, 8)
    params = supervised.init_params(jax.random.PRNGKey(0), cfg, 5)
    assert params["classifier"].shape == (5, 3)
    z = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    labels = np.array([0, 2, 1, 2], np.int32)
    loss, (metrics, state) = supervised.loss_fn({"z": z, "labels": labels}, {}, cfg, params=params)
    w = np.asarray(params["classifier"])
    logits = z @ (w / np.linalg.norm(w, axis=0)) / cfg.temperature
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(loss, -np.mean(log_p[np.arange(4), labels]), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["train_top1"], np.mean(np.argmax(logits, 1) == labels), rtol=1e-6
    )
    assert state == {}
    grad = jax.grad(lambda p: supervised.loss_fn({"z": z, "labels": labels}, {}, cfg, params=p)[0])(
        params
    )
    assert float(jnp.max(jnp.abs(grad["classifier"]))) > 1e-4
    cfg.num_classes = 1
    with pytest.raises(ValueError, match="num_classes"):
        supervised.validate_config(cfg, 8)
