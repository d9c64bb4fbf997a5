"""What the zoo commands share: a ``--model`` is a catalogue entry (its
architecture, and its weights) or a named variant (`nonlocal_tf.models.VARIANTS`)."""

from __future__ import annotations

from absl import app


def _unknown(name: str) -> app.UsageError:
    from nonlocal_tf import models, weights

    return app.UsageError(
        f"Unknown --model {name!r}. Named variants: {', '.join(sorted(models.VARIANTS))}; "
        f"catalogue entries: {', '.join(sorted(weights.CATALOG))}"
    )


def clip_of(name: str) -> tuple[int, int]:
    """(frames, rate) of the clips the model takes."""
    from nonlocal_tf import models, weights

    if name in weights.CATALOG:
        entry = weights.CATALOG[name]
        return entry.frames, entry.rate
    if name in models.VARIANTS:
        clip = models.CLIPS[name.split("_")[-1]]
        return clip.frames, clip.rate
    raise _unknown(name)


def architecture(name: str, width_per_group: int = 64, **kwargs):
    """The model ``name`` stands for, without loading any weights."""
    from nonlocal_tf import models, weights

    if name in weights.CATALOG:
        return weights.CATALOG[name].build(**kwargs)
    if name in models.VARIANTS:
        return models.create_model(name, width_per_group=width_per_group, **kwargs)
    raise _unknown(name)


def build(name: str, weights: str | None = None, width_per_group: int = 64, **kwargs):
    """`architecture`, with the entry's weights for a catalogue entry (a new
    head when ``classes`` differs), then ``weights`` loaded on top, if given."""
    from nonlocal_tf.weights import CATALOG, load_weights

    model = architecture(name, width_per_group, **kwargs)
    for source in (name if name in CATALOG else None, weights):
        if source:
            load_weights(model, source)
    return model
