"""The distillation recipes: ``h0mini``, ``xmag`` and ``expert`` (one module each)."""

from __future__ import annotations


def recipe_class(name: str):
    """The ``Recipe`` subclass of a recipe name (imported lazily)."""
    if name == "h0mini":
        from edgepath.distill.recipes.h0mini import H0MiniRecipe

        return H0MiniRecipe
    if name == "xmag":
        from edgepath.distill.recipes.xmag import XmagRecipe

        return XmagRecipe
    if name == "expert":
        from edgepath.distill.recipes.expert import ExpertRecipe

        return ExpertRecipe
    from edgepath.errors import ConfigError

    raise ConfigError(f"unknown recipe '{name}'; expected h0mini, xmag or expert")
