"""Fun-ASR-Nano (funasr's `FunASRNano`: SenseVoice encoder + adaptor + Qwen3 LLM) as the FunASR
engine's offline model: where its directory's parts are, how a batch is asked for, what comes back.

The model writes punctuation and normalised numbers itself and takes hotwords and a language as
part of its prompt ("热词列表：[...] 语音转写成中文："); the LLM generates the text token by token.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import numpy.typing as npt

from inference.model_hub import ModelUnavailable

if TYPE_CHECKING:
    import torch

    from inference.engines.funasr import Answer, AutoModelLike

log = logging.getLogger(__name__)

MODEL_CLASS = "FunASRNano"


class CharTime(TypedDict):
    """One item of a FunASRNano answer's "timestamps" (its CTC head's forced alignment)."""

    token: str
    start_time: float  # seconds
    end_time: float
    score: float


# Client language codes -> the names the prompt takes ("语音转写成中文"). Fun-ASR-Nano-2512 knows
# 中文, 英文, 日文; Fun-ASR-MLT-Nano-2512 (the same class) all 31 below (names from FunASR's demo).
LANGUAGE_NAMES = {
    "zh": "中文", "en": "英文", "ja": "日文", "yue": "粤语", "ko": "韩文", "vi": "越南语", "id": "印尼语",
    "th": "泰语", "ms": "马来语", "fil": "菲律宾语", "tl": "菲律宾语", "ar": "阿拉伯语", "hi": "印地语",
    "bg": "保加利亚语", "hr": "克罗地亚语", "cs": "捷克语", "da": "丹麦语", "nl": "荷兰语", "et": "爱沙尼亚语",
    "fi": "芬兰语", "el": "希腊语", "hu": "匈牙利语", "ga": "爱尔兰语", "lv": "拉脱维亚语", "lt": "立陶宛语",
    "mt": "马耳他语", "pl": "波兰语", "pt": "葡萄牙语", "ro": "罗马尼亚语", "sk": "斯洛伐克语",
    "sl": "斯洛文尼亚语", "sv": "瑞典语",
}  # fmt: skip

# The LLM stops at its end token; a decode that loops instead ("哈哈哈哈…") is cut at a length no
# speech reaches: 15 tokens a second is above fast Mandarin (~8 characters/s, one token or less each).
MAX_TOKENS_PER_S = 15
MIN_MAX_TOKENS = 20

# Chat-template markers (<|im_end|>) a hotword must not smuggle into the prompt.
_CHAT_TAG = re.compile(r"<\|[^|]*\|>")
# Control characters, and the replacement character the tokenizer writes for a character cut off
# mid-way (its bytes are separate tokens): never caption text.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")

# config.yaml keys that name files inside the model directory by relative path ("Qwen3-0.6B").
# FunASR hands them to transformers as they are, which would look for them in the working
# directory and then on the Hugging Face hub; AutoModel gets them as absolute paths instead.
_RELATIVE_PATHS = (
    ("llm_conf", "init_param_path"),  # the LLM's config.json (its weights are in model.pt)
    ("tokenizer_conf", "init_param_path"),  # the LLM's tokenizer
    ("dataset_conf", "ctc_tokenizer_conf", "vocab_path"),  # the CTC head's tiktoken vocabulary
)


def is_nano(path: Path) -> bool:
    """Whether the model directory holds a FunASRNano model (its config.yaml's `model`)."""
    return _model_config(path).get("model") == MODEL_CLASS


def _model_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}  # AutoModel then reports what is wrong with the file
    return config if isinstance(config, dict) else {}


def automodel_overrides(path: Path, spec: str, role: str) -> dict[str, Any]:
    """AutoModel keyword arguments that point the model's LLM, tokenizer and CTC vocabulary at the
    files inside `path`; ModelUnavailable when the LLM's directory is not there."""
    config = _model_config(path)
    overrides: dict[str, Any] = {}
    for keys in _RELATIVE_PATHS:
        value: Any = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        local = path / value
        if not local.exists():
            if keys[0] == "dataset_conf":
                continue  # only timestamps need it; FunASR says so when it is missing
            raise ModelUnavailable(
                f"funasr.{role} = {spec!r}: {path} is a Fun-ASR-Nano model without its {value}/ "
                f"directory ({'.'.join(keys)}: the LLM's config.json and tokenizer files); copy the whole "
                f"model directory as the hub has it"
            )
        target = overrides
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = str(local)
    return overrides


def without_unusable_alignment(model: AutoModelLike) -> None:
    """Character timestamps come from a CTC head aligned by torchaudio's forced_align (removed in
    torchaudio 2.9; torch is pinned newer). Without it FunASR raises on every decode (no torchaudio)
    or silently returns none, one segment at a time; switching the head off keeps the text and lets
    a batch of segments share one LLM call."""
    inner = model.model
    if inner.ctc_decoder is None:  # FunASRNano sets it (None without a CTC head in its config)
        return
    try:
        import torchaudio

        usable = hasattr(torchaudio.functional, "forced_align")
    except Exception:
        usable = False
    if usable:
        return
    inner.ctc_decoder = inner.ctc = inner.ctc_tokenizer = None
    log.warning("Fun-ASR-Nano: no character timestamps (they need torchaudio's forced_align); text only")


def hotword_list(hotwords: Sequence[tuple[str, int]]) -> list[str]:
    """The phrases of a hotword list as the prompt lists them (the model takes no weights)."""
    phrases = (" ".join(_CHAT_TAG.sub(" ", phrase).split()) for phrase, _ in hotwords)
    return [phrase for phrase in phrases if phrase]


def language_name(code: str | None) -> str | None:
    """The prompt's name for a client language code; None (the model decides) for "auto" or a code
    it has no name for."""
    return LANGUAGE_NAMES.get((code or "").lower())


def generate_arguments(
    batch: Sequence[npt.NDArray[np.float32]], hotwords: list[str], language: str | None, itn: bool, bf16: bool
) -> dict[str, Any]:
    """AutoModel.generate's keyword arguments for one batch (besides input and batch_size)."""
    longest_s = max(len(audio) for audio in batch) / 16000
    arguments: dict[str, Any] = {
        "hotwords": hotwords,
        "language": language,
        "itn": itn,
        "max_length": max(MIN_MAX_TOKENS, math.ceil(longest_s * MAX_TOKENS_PER_S)),
    }
    if bf16:
        # The LLM runs in bfloat16 (float16 overflows in Qwen3); the audio encoder stays float32.
        arguments["llm_dtype"] = "bf16"
    return arguments


def as_inputs(batch: Sequence[npt.NDArray[np.float32]]) -> list[torch.Tensor]:
    """FunASRNano takes each waveform as a torch tensor (or a file path); a numpy array it drops."""
    import torch

    return [torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)) for audio in batch]


def text_of(item: Answer) -> str:
    """The generated text as captions show it (no control or replacement characters)."""
    return _NOT_TEXT.sub("", str(item.get("text", "")))


def timestamps_ms(item: Answer) -> tuple[tuple[int, int], ...] | None:
    """Character times as [start_ms, end_ms]: FunASRNano gives {"start_time": s, "end_time": s}."""
    stamps = item.get("timestamps") or []
    spans = tuple((round(s["start_time"] * 1000), round(s["end_time"] * 1000)) for s in stamps if isinstance(s, dict))
    return spans or None
