"""The ranking model and the plumbing every model stage shares.

The model takes only integer id buckets and float features (see ``core.features``), so it
converts to a full-integer int8 TFLite model with no string ops. It is built with
``tf_keras`` (Keras 2), which tensorflow-model-optimization needs: :func:`keras` sets
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, and every module here imports
Keras through it, inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from core import features


def keras():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_keras

    return tf_keras


def build_ranker(
    embedding_dim: int = 16,
    hidden_units=(64, 32),
    seed: int = 7,
    cross_layers: int = 2,
    table_sizes: dict[str, int] | None = None,
    history: bool = True,
    text: bool = True,
    embedding_dropout: float = 0.0,
):
    """Hashed-id embeddings, the user's history, a user.item term and dense features ->
    DCN-v2 cross layers -> MLP -> click probability.

    Text: the words of the item's title and of the query share one embedding table; the
    title's mean joins the item side (a new item starts from its words), and a query.title
    dot product is the search-relevance term.

    The user's history (``core.features.HISTORY_COLUMNS``: item buckets and weights) is
    pooled through the *same* embedding table as the candidate item (a weighted mean, as in
    YouTube DNN): a user with three purchases is already personalized, and a new item's row
    learns from every user who touches it. The user side (user embedding + pooled history)
    meets the item embedding in a dot product (two-tower interaction term), next to the
    cross layers. All of it is Embedding/Dot/Add/Dense layers: pruning and int8 TFLite need
    nothing custom.

    Args:
        embedding_dim: width of every id embedding.
        hidden_units: sizes of the MLP layers on top of the cross layers.
        seed: initialiser seed, so two builds with the same arguments are identical.
        cross_layers: number of DCN-v2 cross layers (``x_{l+1} = x_0 * (W x_l + b) + x_l``,
            Wang et al. 2021), which learn explicit feature interactions such as user x
            category; 0 gives a plain MLP.
        table_sizes: rows of an id feature's embedding table, where it is not the number of
            hash buckets in ``features.ID_FEATURES`` (``benchmarks.ids`` compares tables).
        history: False leaves the history and the user.item term out (the ablation); the
            model still takes the history inputs, so every model is fed the same way.
        text: False leaves the title and query words out (the ablation; inputs stay).
        embedding_dropout: dropout rate on each id's embedding (training only). Without it
            the id rows memorize their training rows: measured, a model on the dense
            features alone ranked better than one with the ids (``make bench-ablation``).
    """
    k = keras()
    k.utils.set_random_seed(seed)
    length = features.HISTORY_LENGTH
    inputs = {col: k.Input(shape=(1,), dtype="int32", name=col) for col in features.ID_COLUMNS}
    inputs["dense"] = k.Input(shape=(len(features.DENSE_FEATURES),), dtype="float32", name="dense")
    for col, width in features.ARRAY_WIDTHS.items():
        inputs[col] = k.Input(shape=(width,), dtype=features.array_dtype(col), name=col)
    flat = {}
    for name, (_, buckets) in features.ID_FEATURES.items():
        table = k.layers.Embedding(
            (table_sizes or {}).get(name, buckets), embedding_dim, name=f"{name}_embedding"
        )
        ids = inputs[features.id_column(name)]
        if name != "item":
            flat[name] = k.layers.Flatten(name=f"{name}_flat")(table(ids))
            continue
        # One lookup of the candidate and the history items (one table in the int8 model,
        # not a copy per lookup): row 0 is the candidate, rows 1.. the history.
        both = k.layers.Concatenate(name="item_and_history")(
            [ids, inputs[features.HISTORY_BUCKETS]]
        )
        rows = table(both)
        flat[name] = k.layers.Flatten(name="item_flat")(
            k.layers.Cropping1D((0, length), name="item_row")(rows)
        )
        seen = k.layers.Cropping1D((1, 0), name="history_rows")(rows)
    if embedding_dropout:
        flat = {
            name: k.layers.Dropout(embedding_dropout, seed=seed, name=f"{name}_dropout")(v)
            for name, v in flat.items()
        }
    parts = list(flat.values())
    item_side = flat["item"]
    if text:
        # Bags of words: the mean over the slots, padding rows held at zero (sum / slots).
        words = k.layers.Embedding(
            features.WORD_BUCKETS,
            embedding_dim,
            embeddings_constraint=zero_padding_row_class()(),
            name="word_embedding",
        )
        title, query = (
            k.layers.GlobalAveragePooling1D(name=f"{col}_mean")(words(inputs[col]))
            for col in (features.TITLE_TOKENS, features.QUERY_TOKENS)
        )
        item_side = k.layers.Add(name="item_side")([item_side, title])
        query_title = interaction(k, query, title, "query_title")
        parts += [title, query, query_title]
    # Dense features live on small, different scales (position is 0.02-0.2): centre them.
    # epsilon=1 bounds the scaling at 1x: a feature that was constant in training (the state
    # features on a first day, when every id is new) must not be amplified ~30x the day it
    # starts to vary.
    dense = k.layers.BatchNormalization(epsilon=1.0, name="dense_norm")(inputs["dense"])
    parts.append(dense)
    if history:
        # sum_j weight_j * embedding_j (the weights sum to 1; 0 for padding and new users),
        # as a broadcast product and a mean over the slots: int8 kernels keep these exact,
        # where a batched matmul loses a quarter of the pooled vector's range.
        weights = k.layers.Reshape((length, 1), name="history_weight_slots")(
            inputs[features.HISTORY_WEIGHTS]
        )
        weighted = k.layers.Multiply(name="history_weighted")([seen, weights])
        # (the mean is the weighted mean / length: a learned projection takes the scale)
        mean = k.layers.GlobalAveragePooling1D(name="history_mean")(weighted)
        pooled = k.layers.Dense(embedding_dim, use_bias=False, name="history_pool")(mean)
        user_side = k.layers.Add(name="user_side")([flat["user"], pooled])
        match = interaction(k, user_side, item_side, "user_item")
        parts += [pooled, match]
    x0 = x = k.layers.Concatenate(name="concat")(parts)
    width = x0.shape[-1]
    for i in range(cross_layers):
        mixed = k.layers.Dense(width, name=f"cross_{i}_dense")(x)
        x = k.layers.Add(name=f"cross_{i}")(
            [k.layers.Multiply(name=f"cross_{i}_x0")([x0, mixed]), x]
        )
    for i, units in enumerate(hidden_units):
        x = k.layers.Dense(units, activation="relu", name=f"mlp_{i}")(x)
    out = k.layers.Dense(1, activation="sigmoid", name="click")(x)
    model = k.Model(inputs=inputs, outputs=out, name="ranker")
    if text:
        table = model.get_layer("word_embedding")
        table.set_weights([table.embeddings_constraint(table.embeddings).numpy()])
    return model


def build_from_settings(cfg, **options):
    """The ranker ``[train]`` (``core.settings.TrainSettings``) describes; ``options``
    override :func:`build_ranker`'s arguments (the ablation switches parts off)."""
    args = {
        "embedding_dim": cfg.embedding_dim,
        "hidden_units": cfg.hidden_units,
        "seed": cfg.seed,
        "cross_layers": cfg.cross_layers,
        "embedding_dropout": cfg.embedding_dropout,
    }
    return build_ranker(**{**args, **options})


def compile_ranker(model, learning_rate: float | None = None, optimizer=None):
    """Compile for training: a new lazy Adam at ``learning_rate``, or ``optimizer``."""
    k = keras()
    model.compile(
        optimizer=optimizer or lazy_adam_class()(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=[k.metrics.AUC(name="auc")],
    )
    return model


def with_lazy_adam(model):
    """``model`` with its optimizer a lazy Adam (:func:`lazy_adam_class`), moments and step
    count kept: a champion saved with Keras' Adam (before FreshRank used the lazy one)
    switches on its next warm start instead of waiting for a retrain."""
    old = model.optimizer
    lazy_type = lazy_adam_class()
    if isinstance(old, lazy_type):
        return model
    if type(old).__name__ != "Adam":
        raise TypeError(f"cannot carry the state of a {type(old).__name__} optimizer over")
    lazy = lazy_type.from_config(old.get_config())
    lazy.build(model.trainable_variables)
    if len(old.variables) != len(lazy.variables):
        raise ValueError("the saved optimizer's state does not match the model's weights")
    for new, value in zip(lazy.variables, old.variables, strict=True):
        new.assign(value)
    return compile_ranker(model, optimizer=lazy)


def interaction(k, a, b, name: str):
    """The elementwise product of two towers' vectors (the terms of their dot product, which
    the layers above sum as they need), normalized: the concatenation that takes it is
    quantized with one int8 scale, which products of small embeddings would fall under."""
    product = k.layers.Multiply(name=f"{name}_product")([a, b])
    return k.layers.BatchNormalization(name=f"{name}_norm")(product)


@functools.cache
def zero_padding_row_class():
    """Embedding constraint: row 0 (padding) stays zero, so a bag of words padded with 0 has
    the embedding sum of its words (registered, so a saved model loads with it)."""
    import tensorflow as tf

    k = keras()

    @k.saving.register_keras_serializable(package="freshrank")
    class ZeroPaddingRow(k.constraints.Constraint):
        def __call__(self, w):
            return tf.concat([tf.zeros_like(w[:1]), w[1:]], axis=0)

    return ZeroPaddingRow


def load_ranker(path: str | Path):
    lazy_adam_class()  # registered, so a saved model's optimizer loads with it
    zero_padding_row_class()
    return keras().models.load_model(str(path))


@functools.cache
def lazy_adam_class():
    """Adam that moves an embedding row, and that row's moments, only on the steps that
    look the row up (as TensorFlow Addons' ``LazyAdam``).

    Keras' Adam decays the moments of *every* row on every step and applies them, so a row
    the day never looks up still drifts on the momentum it had in the champion's last steps
    (measured: about 40% as far as the rows the day trains). With this one a fine-tune
    moves exactly the rows of the users, items, brands, ... that are in its training rows;
    dense layers are updated as by Adam. Saved with the model (``freshrank>LazyAdam``), so
    a warm start carries it and its moments on; a champion saved with Keras' Adam is
    switched over, state kept, on its next warm start (:func:`with_lazy_adam`).
    """
    import tensorflow as tf

    k = keras()

    @k.saving.register_keras_serializable(package="freshrank")
    class LazyAdam(k.optimizers.Adam):
        def update_step(self, gradient, variable):
            if not isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            lr = tf.cast(self.learning_rate, dtype)
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            key = self._var_key(variable)
            m = self._momentums[self._index_dict[key]]
            v = self._velocities[self._index_dict[key]]
            # One gradient row per looked-up row: sum the rows a batch looks up repeatedly.
            rows, where = tf.unique(gradient.indices)
            grad = tf.math.unsorted_segment_sum(gradient.values, where, tf.shape(rows)[0])
            m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * grad
            v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(grad)
            m.scatter_update(tf.IndexedSlices(m_rows, rows))
            v.scatter_update(tf.IndexedSlices(v_rows, rows))
            step_rows = alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
            variable.scatter_sub(tf.IndexedSlices(step_rows, rows))

    return LazyAdam


# --- data -------------------------------------------------------------------------------
def read_examples(paths, split: str | None = None, fraction: float = 1.0, seed: int = 7):
    """Read example partitions (Parquet dirs) into a pandas DataFrame, optionally sampled."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for path in paths:
        table = pq.read_table(str(path), columns=list(features.EXAMPLE_SCHEMA))
        df = table.to_pandas()
        if split:
            df = df[df["split"] == split]
        if fraction < 1.0:
            df = df.sample(frac=fraction, random_state=seed)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(features.EXAMPLE_SCHEMA))
    return pd.concat(frames, ignore_index=True)


def to_inputs(df) -> dict[str, np.ndarray]:
    """Model inputs of an examples frame: ``(N, 1)`` int32 ids, an ``(N, D)`` float block and
    the ``(N, width)`` arrays (``features.ARRAY_WIDTHS``: history buckets and weights, words)."""
    inputs = {c: df[c].to_numpy(np.int32).reshape(-1, 1) for c in features.ID_COLUMNS}
    inputs["dense"] = df[list(features.DENSE_FEATURES)].to_numpy(np.float32)
    for col, width in features.ARRAY_WIDTHS.items():
        inputs[col] = _stacked(df[col].to_numpy(), col, width)
    return inputs


def _stacked(values, col: str, width: int) -> np.ndarray:
    """An object column of equal-length arrays as one ``(N, width)`` array (a concatenate:
    3x faster than ``np.stack`` on a million rows), refusing rows of another length."""
    dtype = features.array_dtype(col)
    if not len(values):
        return np.zeros((0, width), dtype)
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    if (lengths != width).any():
        row = int(np.flatnonzero(lengths != width)[0])
        raise ValueError(f"{col}: row {row} has {lengths[row]} values, the model takes {width}")
    return np.concatenate(values).astype(dtype, copy=False).reshape(-1, width)


def labels(df) -> np.ndarray:
    return df[features.LABEL].to_numpy(np.float32)
