"""The ``Engine`` interface: normalised NCHW (or uint8 tiles) in, float32 embeddings out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from edgepath.errors import ConfigError
from edgepath.models.cards import EncoderSpec
from edgepath.models.preprocess import normalize

log = logging.getLogger(__name__)

#: What the model graph takes: normalised float32 NCHW (the default), or raw uint8 NHWC tiles
#: when preprocessing (cast, /255, mean/std, NHWC->NCHW) is fused into the exported graph.
InputFormat = Literal["nchw-float32", "nhwc-uint8"]
INPUT_FORMATS: tuple[str, ...] = ("nchw-float32", "nhwc-uint8")


def denormalize(x: np.ndarray, spec: EncoderSpec) -> np.ndarray:
    """Normalised float NCHW -> uint8 NHWC (exact for inputs that came from uint8 tiles)."""
    mean = np.asarray(spec.input.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.input.std, dtype=np.float32).reshape(1, 3, 1, 1)
    u = (np.asarray(x, dtype=np.float32) * std + mean) * 255.0
    return np.ascontiguousarray(np.clip(np.rint(u), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


class Engine:
    """One model on one runtime: batches in, ``(N, embedding.dim)`` float32 embeddings out.

    Subclasses implement ``_run(batch)`` on the graph's own input format (``input_format``) and
    may override ``close``. ``__call__`` takes normalised float32 NCHW; ``embed_tiles`` takes uint8
    NHWC tiles and applies the spec's preprocessing (or lets the graph do it when it is fused).

    Attributes:
        name: ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt``.
        precision: ``fp32``, ``fp16``, ``int8``, ``fp8-e4m3`` …
        spec: The encoder spec (input tile px, mean/std, embedding definition and dim).
        input_format: ``nchw-float32`` or ``nhwc-uint8`` (preprocessing fused into the graph).
        device: Where it runs (``cpu``, ``cuda:0``, ``GPU``, …).
        info: Runtime details (version, providers, threads) for ``doctor`` and ``bench``.
    """

    name: str = "engine"

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        precision: str = "fp32",
        input_format: str = "nchw-float32",
        device: str = "cpu",
    ) -> None:
        if input_format not in INPUT_FORMATS:
            raise ConfigError(
                f"unknown input format '{input_format}'; expected one of {INPUT_FORMATS}"
            )
        self.spec = spec
        self.precision = precision
        self.input_format = input_format
        self.device = device
        self.info: dict[str, Any] = {}

    @property
    def embed_dim(self) -> int:
        """Dimension of the embeddings returned."""
        return self.spec.embedding.dim

    @property
    def tile_px(self) -> int:
        """Side of the square tiles the model takes."""
        return self.spec.input.tile_px

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_shape(self, shape: tuple[int, ...], layout: str) -> None:
        px = self.tile_px
        expected = (3, px, px) if layout == "nchw" else (px, px, 3)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ConfigError(
                f"{self.name} engine takes {layout.upper()} batches of shape (N, "
                f"{', '.join(map(str, expected))}), got {tuple(shape)}; resize tiles to {px} px"
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed a batch of normalised float32 NCHW tiles.

        Args:
            x: (N, 3, tile_px, tile_px) normalised as ``spec.input`` prescribes.

        Returns:
            float32 (N, embedding.dim).
        """
        batch, n = self._prepare(x, tiles=False)
        return self._finish(self._run(batch), n)

    def embed_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Embed uint8 RGB tiles (N, H, W, 3): preprocessing per the spec, then the model."""
        batch, n = self._prepare(tiles, tiles=True)
        return self._finish(self._run(batch), n)

    def submit(self, x: np.ndarray, *, tiles: bool = False) -> Callable[[], np.ndarray]:
        """Start embedding a batch; returns a function that gives its embeddings.

        ``x`` is normalised float32 NCHW (``__call__``'s input), or uint8 NHWC tiles with
        ``tiles`` (``embed_tiles``'). ``x`` may be reused as soon as this returns. Engines that
        run asynchronously (torch on CUDA) return before the device has finished, so that the
        caller can prepare the next batch, and the copy of the next batch to the device, while
        this one runs; by default the batch is embedded before this returns.
        """
        batch, n = self._prepare(x, tiles=tiles)
        fetch = self._launch(batch)
        return lambda: self._finish(fetch(), n)

    def _launch(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        """Start ``_run(batch)``; an asynchronous engine returns before it has finished."""
        out = self._run(batch)
        return lambda: out

    def _prepare(self, x: np.ndarray, *, tiles: bool) -> tuple[np.ndarray, int]:
        """The batch in the graph's input format (``input_format``), and its number of tiles."""
        t = np.asarray(x)
        if not tiles:
            self._check_shape(t.shape, "nchw")
            if self.input_format == "nhwc-uint8":
                return denormalize(t, self.spec), len(t)
            return np.ascontiguousarray(t, dtype=np.float32), len(t)
        if t.ndim == 3:
            t = t[None]
        if t.dtype != np.uint8:
            raise ConfigError(f"embed_tiles takes uint8 RGB tiles, got dtype {t.dtype}")
        self._check_shape(t.shape, "nhwc")
        if self.input_format == "nhwc-uint8":
            return np.ascontiguousarray(t), len(t)
        return normalize(t, self.spec), len(t)

    def _finish(self, out: np.ndarray, n: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (n, self.embed_dim):
            raise ConfigError(
                f"{self.name} engine returned shape {out.shape}, expected ({n}, {self.embed_dim}); "
                "the model file does not match its manifest"
            )
        return out

    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Name, precision, device, input format and runtime info (JSON-able)."""
        return {
            "engine": self.name,
            "precision": self.precision,
            "device": self.device,
            "input_format": self.input_format,
            "embed_dim": self.embed_dim,
            **self.info,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r}, "
            f"input_format={self.input_format!r}, embed_dim={self.embed_dim})"
        )
