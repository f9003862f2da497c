"""ReKD's extension readings (candidates, beta / target_tau_t, miner_input, the 'oracle_topk'
relation): the default reading's numbers and state against the formula it implements, each
reading on 4 devices against one device, its loss against the loss functions composed by hand,
and the configuration errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.methods import common, losses, rekd, relation, seed
from rekd_jax.methods import queue as queue_lib

DEVICES, LOCAL = 4, 2
GLOBAL = DEVICES * LOCAL
STUDENT, TEACHER, FEATURES = 6, 6, 5


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_embeddings(step, teacher_dim=TEACHER):
    rng = np.random.default_rng(200 + step)
    return {
        "q": unit_rows(rng, GLOBAL, STUDENT),
        "k": unit_rows(rng, GLOBAL, STUDENT),
        "t": unit_rows(rng, GLOBAL, teacher_dim),
        "t_features": (3.0 * rng.normal(size=(GLOBAL, FEATURES))).astype(np.float32),
        "labels": rng.integers(-1, 3, GLOBAL).astype(np.int32),
    }


def small_config(**overrides):
    cfg = rekd.default_config()
    cfg.queue_size = 16
    cfg.num_prototypes = 4
    cfg.reseed_after = 2
    cfg.relation_topk = 3
    cfg.lambda_inst = 0.5
    cfg.update(overrides)
    rekd.validate_config(cfg, GLOBAL)
    return cfg


def init_state(cfg, teacher_dim=TEACHER):
    return rekd.init_state(
        jax.random.PRNGKey(0),
        cfg,
        STUDENT,
        None if cfg.teacher == "none" else teacher_dim,
        teacher_feature_dim=FEATURES,
    )


# The default reading as it is defined (and was implemented before the extension fields): the
# teacher embeddings are the miner's input, the candidates are the own key and the student
# queue, and the queue holds (key, teacher, label).
def reference_loss_fn(embeddings, state, cfg, *, rng, axis_name=None):
    q = embeddings["q"]
    k = jax.lax.stop_gradient(embeddings["k"])
    t = jax.lax.stop_gradient(embeddings["t"]).astype(jnp.float32)
    labels = embeddings["labels"].astype(jnp.int32)
    queue, bank = state["queue"], state["prototypes"]
    k_global = queue_lib.global_batch(k, axis_name)
    t_global = queue_lib.global_batch(t, axis_name)
    labels_global = queue_lib.global_batch(labels, axis_name)
    if cfg.assignment == "argmax":
        assign_global = relation.assign(t_global, bank["centers"])
        assign_queue = relation.assign(queue["teacher"], bank["centers"])
    else:
        size = queue["teacher"].shape[0]
        pooled_assign = relation.assign_balanced(
            jnp.concatenate([queue["teacher"], t_global]),
            bank["centers"],
            cfg.sinkhorn_epsilon,
            cfg.sinkhorn_iterations,
            row_mask=jnp.concatenate([queue["valid"], jnp.ones(t_global.shape[0], bool)]),
        )
        assign_global, assign_queue = pooled_assign[size:], pooled_assign[:size]
    assign_local = common.local_rows(assign_global, q.shape[0], axis_name)
    mask = relation.relation_positives(
        t,
        queue["teacher"],
        assign_local,
        assign_queue,
        queue["valid"],
        cfg.relation,
        cfg.relation_threshold,
        cfg.relation_topk,
        anchor_labels=labels,
        cand_labels=queue["label"],
    )
    loss_rel = losses.relation_contrast(
        q, k, queue["key"], mask, cfg.temperature, cfg.instance_positive
    )
    loss_inst = losses.info_nce(q, k, queue["key"], cfg.temperature)
    loss = loss_rel + cfg.lambda_inst * loss_inst
    new_bank = relation.update_prototypes(
        bank,
        t_global,
        assign_global,
        cfg.prototype_momentum,
        cfg.reseed_after,
        common.replicated_rng(rng, axis_name),
    )
    new_queue = queue_lib.enqueue(
        queue, {"key": k_global, "teacher": t_global, "label": labels_global}
    )
    metrics = {
        "loss": common.global_mean(loss, axis_name),
        "loss_rel": common.global_mean(loss_rel, axis_name),
        "loss_inst": common.global_mean(loss_inst, axis_name),
        **common.contrast_metrics(jax.lax.stop_gradient(q), k, queue["key"], axis_name),
        **relation.relation_diagnostics(
            mask, labels, queue["label"], assign_global, cfg.num_prototypes, axis_name=axis_name
        ),
        "prototype_mean_age": jnp.mean(new_bank["age"].astype(jnp.float32)),
    }
    return loss, (metrics, {"queue": new_queue, "prototypes": new_bank})


def reference_init_state(rng, cfg, student_dim, teacher_dim):
    queue_key, bank_key = jax.random.split(rng)
    fields = {
        "key": ((student_dim,), jnp.float32, queue_lib.UNIT),
        "label": ((), jnp.int32, -1),
        "teacher": ((teacher_dim,), jnp.float32, queue_lib.UNIT),
    }
    return {
        "queue": queue_lib.init_queue(queue_key, cfg.queue_size, fields),
        "prototypes": relation.init_prototypes(bank_key, cfg.num_prototypes, teacher_dim),
    }


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize(
    "overrides", [{}, {"relation": "prototype", "assignment": "sinkhorn"}, {"relation": "oracle"}]
)
def test_default_reading_is_bit_identical_to_its_formula(overrides):
    """The extension fields at their defaults change no number, no state field and no draw."""
    cfg = rekd.default_config()
    cfg.update(queue_size=16, num_prototypes=4, reseed_after=2, relation_topk=3, **overrides)
    state = rekd.init_state(jax.random.PRNGKey(0), cfg, STUDENT, 3)
    reference = reference_init_state(jax.random.PRNGKey(0), cfg, STUDENT, 3)
    assert_trees_equal(state, reference)
    for step in range(3):  # eager: the same operations give the same bits
        embeddings = make_embeddings(step, teacher_dim=3)
        rng = jax.random.PRNGKey(step)
        loss, (metrics, state) = rekd.loss_fn(embeddings, state, cfg, rng=rng)
        ref_loss, (ref_metrics, reference) = reference_loss_fn(embeddings, reference, cfg, rng=rng)
        np.testing.assert_array_equal(loss, ref_loss)
        assert_trees_equal(metrics, ref_metrics)
        assert_trees_equal(state, reference)
    assert float(metrics["positives_per_anchor"]) > 1.0


def make_step(cfg, axis_name):
    def step(embeddings, state, rng):
        def loss_of(q):
            return rekd.loss_fn(dict(embeddings, q=q), state, cfg, rng=rng, axis_name=axis_name)

        (loss, (metrics, new_state)), grad = jax.value_and_grad(loss_of, has_aux=True)(
            embeddings["q"]
        )
        return loss, grad, metrics, new_state

    return step


def shard(tree):
    return jax.tree.map(lambda x: x.reshape(DEVICES, LOCAL, *x.shape[1:]), tree)


def replicate(tree):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (DEVICES, *x.shape)), tree)


READINGS = [
    {"candidates": "teacher", "teacher": "offline"},
    {"candidates": "teacher", "beta": 0.5, "target_tau_t": 0.05, "teacher": "offline"},
    {"candidates": "teacher", "beta": 0.0, "teacher": "offline"},
    {"miner_input": "backbone", "teacher": "offline"},
    {"miner_input": "backbone", "relation": "prototype", "assignment": "sinkhorn"},
    {"miner_view": "weak", "teacher": "offline"},
    {"relation": "oracle_topk"},
    {"relation": "oracle_topk", "teacher": "none"},
]


@pytest.mark.parametrize("overrides", READINGS)
def test_each_reading_on_four_devices_equals_one_device(overrides):
    if "miner_input" in overrides:
        overrides = {"teacher": "offline", **overrides}
    cfg = small_config(**overrides)
    single_step = jax.jit(make_step(cfg, None))
    pmap_step = jax.pmap(make_step(cfg, "batch"), axis_name="batch")
    single_state = init_state(cfg)
    pmap_state = replicate(single_state)
    for step in range(3):  # 3 steps of 8 fill the 16-row queue and wrap around
        embeddings = make_embeddings(step)
        if cfg.teacher == "none":
            embeddings = {name: embeddings[name] for name in ("q", "k", "labels")}
        rng = jax.random.PRNGKey(10 + step)
        rngs = jnp.stack([rng, *jax.random.split(jax.random.PRNGKey(99 + step), DEVICES - 1)])
        loss, grad, metrics, single_state = single_step(embeddings, single_state, rng)
        p_loss, p_grad, p_metrics, pmap_state = pmap_step(shard(embeddings), pmap_state, rngs)
        assert np.isfinite(loss) and float(jnp.max(jnp.abs(grad))) > 1e-4
        np.testing.assert_allclose(np.mean(p_loss), loss, rtol=2e-5)
        np.testing.assert_allclose(
            np.asarray(p_grad).reshape(grad.shape) / DEVICES, grad, rtol=2e-4, atol=1e-7
        )
        for device in range(DEVICES):
            jax.tree.map(
                lambda x, y, d=device: np.testing.assert_allclose(x[d], y, rtol=2e-5, atol=2e-6),
                (p_metrics, pmap_state),
                (metrics, single_state),
            )
        assert {"positive_label_precision", "positives_per_anchor"} <= set(metrics)


def test_teacher_candidates_score_the_teacher_queue_with_the_mixed_target():
    """candidates='teacher': the relation loss is relation_response over [t_i, teacher queue]
    with the mined mask; L_inst stays MoCo's instance loss over the student's keys."""
    cfg = small_config(candidates="teacher", beta=0.3, target_tau_t=0.05, teacher="offline")
    state = init_state(cfg)
    for step in range(2):
        e = make_embeddings(step)
        loss, (metrics, new_state) = rekd.loss_fn(e, state, cfg, rng=jax.random.PRNGKey(step))
        queue = state["queue"]
        mask = relation.relation_positives(
            e["t"], queue["teacher"], None, None, queue["valid"], "topk", 0.0, 3
        )
        expected = losses.relation_response(e["q"], e["t"], queue["teacher"], mask, 0.2, 0.3, 0.05)
        np.testing.assert_allclose(metrics["loss_rel"], expected, rtol=1e-6)
        inst = losses.info_nce(e["q"], e["k"], queue["key"], 0.2)
        np.testing.assert_allclose(loss, expected + 0.5 * inst, rtol=1e-6)
        state = new_state
    assert set(state["queue"]) == {"key", "teacher", "label", "ptr", "valid"}


def test_beta_zero_is_seed_with_tau_s_the_temperature():
    """beta 0 over the teacher's candidates is SEED's loss (tau_s = temperature, tau_t =
    target_tau_t) step after step, once both queues start from the same rows."""
    cfg = small_config(candidates="teacher", beta=0.0, lambda_inst=0.0, teacher="offline")
    seed_cfg = seed.default_config()
    seed_cfg.update(queue_size=16, tau_s=cfg.temperature, tau_t=cfg.target_tau_t)
    state = init_state(cfg)
    seed_state = seed.init_state(jax.random.PRNGKey(1), seed_cfg, TEACHER, TEACHER)
    state["queue"]["teacher"] = seed_state["queue"]["teacher"]
    for step in range(3):
        e = make_embeddings(step)
        loss, (_, state) = rekd.loss_fn(e, state, cfg, rng=jax.random.PRNGKey(step))
        seed_loss, (_, seed_state) = seed.loss_fn(
            {"z_s": e["q"], "z_t": e["t"]}, seed_state, seed_cfg
        )
        np.testing.assert_allclose(loss, seed_loss, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(state["queue"]["teacher"], seed_state["queue"]["teacher"])


def test_backbone_miner_relates_normalised_features_and_sizes_the_bank():
    cfg = small_config(miner_input="backbone", teacher="offline")
    state = init_state(cfg)
    assert state["queue"]["miner"].shape == (16, FEATURES)
    assert state["queue"]["teacher"].shape == (16, TEACHER)
    assert state["prototypes"]["centers"].shape == (4, FEATURES)
    for step in range(2):
        e = make_embeddings(step)
        _, (metrics, new_state) = rekd.loss_fn(e, state, cfg, rng=jax.random.PRNGKey(step))
        features = e["t_features"] / np.linalg.norm(e["t_features"], axis=1, keepdims=True)
        queue = state["queue"]
        mask = relation.relation_positives(
            features, queue["miner"], None, None, queue["valid"], "topk", 0.0, 3
        )
        expected = losses.relation_contrast(e["q"], e["k"], queue["key"], mask, 0.2)
        np.testing.assert_allclose(metrics["loss_rel"], expected, rtol=1e-6)
        np.testing.assert_allclose(
            new_state["queue"]["miner"][8 * step : 8 * step + 8], features, rtol=1e-6
        )
        np.testing.assert_allclose(new_state["queue"]["teacher"][8 * step : 8 * step + 8], e["t"])
        state = new_state
    with pytest.raises(ValueError, match="t_features"):
        rekd.loss_fn(
            {k: v for k, v in e.items() if k != "t_features"}, state, cfg, rng=jax.random.PRNGKey(0)
        )
    with pytest.raises(ValueError, match="teacher_feature_dim"):
        rekd.init_state(jax.random.PRNGKey(0), cfg, STUDENT, TEACHER)


def test_oracle_topk_trains_on_exactly_k_true_positives():
    cfg = small_config(relation="oracle_topk", relation_topk=2, teacher="none", lambda_inst=0.0)
    state = init_state(cfg)
    for step in range(3):
        e = {name: v for name, v in make_embeddings(step).items() if name in ("q", "k", "labels")}
        loss, (metrics, new_state) = rekd.loss_fn(e, state, cfg, rng=jax.random.PRNGKey(step))
        queue = state["queue"]
        mask = relation.relation_positives(
            None,
            None,
            None,
            None,
            queue["valid"],
            "oracle_topk",
            0.0,
            2,
            anchor_labels=e["labels"],
            cand_labels=queue["label"],
            cand_age=queue_lib.row_age(queue),
        )
        np.testing.assert_allclose(
            loss, losses.relation_contrast(e["q"], e["k"], queue["key"], mask, 0.2), rtol=1e-6
        )
        if step == 2:  # 16 labelled rows: every known-label anchor finds its 2
            known = e["labels"] >= 0
            np.testing.assert_array_equal(np.asarray(mask)[known, 1:].sum(1), 2)
            np.testing.assert_allclose(metrics["positive_label_precision"], 1.0)
        state = new_state


BAD = [
    ({"candidates": "queue"}, "candidates"),
    ({"beta": 1.5, "candidates": "teacher"}, "beta must be in"),
    ({"beta": -0.1, "candidates": "teacher"}, "beta must be in"),
    ({"beta": 0.5}, "candidates='teacher'"),
    ({"target_tau_t": 0.0}, "target_tau_t"),
    ({"miner_input": "logits"}, "miner_input"),
    ({"miner_view": "strong"}, "miner_view"),
    ({"miner_input": "backbone"}, "miner_input='backbone' needs an offline teacher"),
    ({"miner_input": "backbone", "teacher": "none", "relation": "oracle"}, "offline teacher"),
    ({"miner_view": "weak"}, "miner_view='weak' needs an offline teacher"),
    ({"miner_view": "weak", "teacher": "none", "relation": "oracle_topk"}, "offline teacher"),
    ({"candidates": "teacher", "teacher": "none", "relation": "oracle"}, "candidates='student'"),
    ({"teacher": "none", "relation": "topk"}, "'oracle' or 'oracle_topk'"),
    ({"relation": "oracle_topk", "relation_topk": 0}, "relation_topk"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_invalid_combinations_are_named_with_the_fix(overrides, message):
    cfg = rekd.default_config()
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message) as error:
        rekd.validate_config(cfg, 256)
    assert "\n" not in str(error.value)


def test_teacher_candidates_need_the_teachers_width():
    cfg = small_config(candidates="teacher", teacher="offline")
    with pytest.raises(ValueError, match="set the student projector's output dim to 4"):
        rekd.init_state(jax.random.PRNGKey(0), cfg, STUDENT, 4)


def test_teacher_view_follows_miner_view():
    assert rekd.teacher_view(small_config()) == "v2"
    assert rekd.teacher_view(small_config(miner_view="weak", teacher="offline")) == "weak"
    assert seed.teacher_view(seed.default_config()) == "v1"
    assert not rekd.reads_teacher_features(small_config())
    assert rekd.reads_teacher_features(small_config(miner_input="backbone", teacher="offline"))
