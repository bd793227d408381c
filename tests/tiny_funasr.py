"""Tiny, randomly initialised FunASR models saved as local model directories.

The hub models (paraformer-zh = SeACo-Paraformer, paraformer-zh-streaming, ct-punc, SenseVoiceSmall,
Fun-ASR-Nano-2512) cannot be downloaded here.  These fixtures are built from funasr's own registered model classes
with configs shaped like the real ModelScope ones (same classes, frontends, tokenizers, file layout,
``configuration.json``), only with 2 blocks and 32-dim layers.  They load through the very same call as a real
model directory::

    funasr.AutoModel(model=str(path), disable_update=True, device="cpu")

Their outputs are random characters (deterministic for a given seed): use them to test shapes, plumbing, timing
and messages, never words.

    from tests.tiny_funasr import build_tiny_models
    paths = build_tiny_models(tmp_path_factory.mktemp("funasr"))   # {"offline": Path, "online": ..., ...}

Building is idempotent: a directory whose stamp matches the current spec is reused as is; otherwise it is built in
a temporary sibling and renamed into place, so an interrupted build never leaves a stamped half-written model.
Builders sharing a root (pytest-xdist's workers) take turns on a lock file in it, so each model is built once.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MODEL_NAMES", "TOKENS", "build_tiny_model", "build_tiny_models", "sensevoice_available", "NANO_LLM_DIR"]

_BUILDER_VERSION = 1
_STAMP = ".tiny_funasr_stamp"

# A few hundred common Chinese characters (duplicates are removed below, order kept).
_COMMON_CHARS = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天"
    "而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些"
    "与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相"
    "次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立"
    "马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共"
    "风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快"
    "条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李"
    "息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯"
    "专石若兵弟谁校读志飞观争究包组造落视济喜离虽坐集编宝谈府拉黑且随格尽剑讲布杀微怕母调局根曾准团段终乐切级克精哪"
    "官示冷词热云雨你好谢再见早晚饭茶"
)
_CHARS: list[str] = list(dict.fromkeys(c for c in _COMMON_CHARS if not c.isspace()))

#: ASR token list: the layout of the real vocab8404 ``tokens.json`` (blank/sos/eos first, ``<unk>`` last).
TOKENS: list[str] = ["<blank>", "<s>", "</s>", *_CHARS, "<unk>"]
#: Punctuation vocabulary: characters plus a few English words (ct-punc is a zh/en model).
PUNC_TOKENS: list[str] = ["<blank>", "<s>", "</s>", *_CHARS, "hello", "world", "ok", "the", "is", "<unk>"]
PUNC_LIST = ["<unk>", "_", "，", "。", "？", "、"]
#: SenseVoice rich-transcription tags, user-defined pieces of its sentencepiece model as in the real one.
SENSEVOICE_TAGS = [
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|FEARFUL|>", "<|DISGUSTED|>", "<|SURPRISED|>",
    "<|EMO_UNKNOWN|>", "<|Speech|>", "<|BGM|>", "<|Applause|>", "<|Laughter|>", "<|Cry|>", "<|Sneeze|>",
    "<|Breath|>", "<|Cough|>", "<|Event_UNK|>", "<|withitn|>", "<|woitn|>",
]  # fmt: skip

_DIM = 32
_N_MELS, _LFR_M, _LFR_N = 80, 7, 6
_FEAT_DIM = _N_MELS * _LFR_M  # 560, as in the real am.mvn

_FRONTEND_CONF = {
    "fs": 16000,
    "window": "hamming",
    "n_mels": _N_MELS,
    "frame_length": 25,
    "frame_shift": 10,
    "lfr_m": _LFR_M,
    "lfr_n": _LFR_N,
    "dither": 0.0,
}
_SANM_ENCODER_CONF = {
    "output_size": _DIM,
    "attention_heads": 4,
    "linear_units": 2 * _DIM,
    "num_blocks": 2,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}
_DECODER_CONF = {
    "attention_heads": 4,
    "linear_units": 2 * _DIM,
    "num_blocks": 2,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "self_attention_dropout_rate": 0.1,
    "src_attention_dropout_rate": 0.1,
    "att_layer_num": 2,
    "kernel_size": 11,
    "sanm_shfit": 0,
}
_CHAR_TOKENIZER = {"tokenizer": "CharTokenizer", "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True}}


def _offline_config() -> dict:
    """SeACo-Paraformer, shaped like iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch."""
    return {
        "model": "SeacoParaformer",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
            "inner_dim": _DIM,
            "bias_encoder_type": "lstm",
            "bias_encoder_bid": False,
            "seaco_lsm_weight": 0.1,
            "seaco_length_normalized_loss": True,
            "train_decoder": True,
            "NO_BIAS": len(TOKENS) - 2,  # 8377 in the real vocab8404; must be a valid id here
        },
        "encoder": "SANMEncoder",
        "encoder_conf": dict(_SANM_ENCODER_CONF),
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": dict(_DECODER_CONF),
        "seaco_decoder": "ParaformerSANMDecoder",
        "seaco_decoder_conf": {
            **_DECODER_CONF,
            "kernel_size": 21,
            "use_output_layer": False,
            "wo_input_layer": True,
        },
        "predictor": "CifPredictorV3",
        "predictor_conf": {
            "idim": _DIM,
            "threshold": 1.0,
            "l_order": 1,
            "r_order": 1,
            "tail_threshold": 0.45,
            "smooth_factor2": 0.25,
            "noise_threshold2": 0.01,
            "upsample_times": 3,
            "use_cif1_cnn": False,
            "upsample_type": "cnn_blstm",
        },
        "frontend": "WavFrontend",
        "frontend_conf": dict(_FRONTEND_CONF),
        **_CHAR_TOKENIZER,
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "normalize": None,
    }


def _online_config() -> dict:
    """ParaformerStreaming, shaped like iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online."""
    return {
        "model": "ParaformerStreaming",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
        },
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {
            **_SANM_ENCODER_CONF,
            "input_layer": "pe_online",
            "chunk_size": [12, 15],
            "stride": [8, 10],
            "pad_left": [0, 0],
            "encoder_att_look_back_factor": [4, 4],
            "decoder_att_look_back_factor": [1, 1],
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {**_DECODER_CONF, "sanm_shfit": 5},
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": _DIM, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": "WavFrontendOnline",
        "frontend_conf": dict(_FRONTEND_CONF),
        **_CHAR_TOKENIZER,
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "normalize": None,
    }


def _punc_config() -> dict:
    """CTTransformer, shaped like iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch (char level, no jieba)."""
    return {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": _DIM,
            "att_unit": _DIM,
            "dropout_rate": 0.1,
            "punc_list": list(PUNC_LIST),
            "punc_weight": [1.0] * len(PUNC_LIST),
            "sentence_end_id": 3,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {**_SANM_ENCODER_CONF, "input_size": _DIM, "attention_dropout_rate": 0.0, "padding_idx": 0},
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }


def _sensevoice_config() -> dict:
    """SenseVoiceSmall, shaped like iic/SenseVoiceSmall."""
    return {
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {**_SANM_ENCODER_CONF, "tp_blocks": 1},
        "frontend": "WavFrontend",
        "frontend_conf": {**_FRONTEND_CONF, "cmvn_file": None},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
    }


def _nano_config() -> dict:
    """FunASRNano, shaped like FunAudioLLM/Fun-ASR-Nano-2512 (SenseVoice encoder, Transformer adaptor, a Qwen3 LLM
    whose config.json and tokenizer sit in a subdirectory named relative to the model's, a CTC head for timestamps
    with a tiktoken vocabulary). The real one: 512-dim encoder of 50 + 20 blocks, Qwen3-0.6B (1024 wide, 28 layers)."""
    return {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {**_SANM_ENCODER_CONF, "tp_blocks": 1, "freeze": True},
        "llm": "Qwen3-0.6b",
        "llm_conf": {
            "hub": "hf",
            "freeze": True,
            "llm_dtype": "bf16",
            "init_param_path": NANO_LLM_DIR,
            "use_lora": False,
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "ffn_dim": 2 * _DIM,
            "llm_dim": _NANO_LLM["hidden_size"],
            "encoder_dim": _DIM,
            "n_layer": 1,
            "attention_heads": 4,
            "freeze": True,
        },
        "ctc_decoder": "Transformer",
        "detach_ctc_decoder": True,
        "ctc_decoder_conf": {
            "downsample_rate": 1,
            "ffn_dim": 2 * _DIM,
            "llm_dim": _DIM,
            "encoder_dim": _DIM,
            "n_layer": 1,
            "attention_heads": 4,
            "freeze": True,
        },
        "ctc_weight": 0.3,
        "ctc_vocab_size": 257,  # the 256 byte tokens of the tiny tiktoken vocabulary + blank (60515 in the real one)
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "frontend": "WavFrontend",
        "frontend_conf": {**_FRONTEND_CONF, "cmvn_file": None},
        "tokenizer": "HuggingfaceTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "init_param_path": NANO_LLM_DIR},
        "dataset_conf": {"ctc_tokenizer": "SenseVoiceTokenizer", "ctc_tokenizer_conf": {"vocab_path": _TIKTOKEN_NAME}},
    }


#: Where a Fun-ASR-Nano directory keeps its LLM's config.json and tokenizer (its weights are in model.pt).
NANO_LLM_DIR = "Qwen3-0.6B"
_TIKTOKEN_NAME = "multilingual.tiktoken"
#: Chat-template tokens FunASRNano's prompt uses (the audio markers are cut out before tokenizing).
_NANO_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# A Qwen3 causal LM, 2 layers of 32; a wide initialisation so the random text depends on the audio.
_NANO_LLM = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "initializer_range": 0.5,
    "torch_dtype": "bfloat16",
}

_SPM_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"

# name -> (config factory, which extra files the real directory has)
_SPECS = {
    "offline": (_offline_config, ("tokens", "am.mvn", "seg_dict")),
    "online": (_online_config, ("tokens", "am.mvn", "seg_dict")),
    "punc": (_punc_config, ("punc_tokens",)),
    "sensevoice": (_sensevoice_config, ("am.mvn", "spm")),
    "nano": (_nano_config, ("llm", "tiktoken")),
}
MODEL_NAMES = tuple(_SPECS)
#: Built when asked for by name (the LLM's tokenizer takes a few seconds to train): not in the default set.
_ON_REQUEST = ("nano",)


def sensevoice_available() -> bool:
    """SenseVoice needs the ``sentencepiece`` package (a funasr dependency) to train its tiny tokenizer."""
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        return False
    return True


def _configuration_json(name: str, extras: Iterable[str]) -> dict:
    """The ModelScope ``configuration.json`` funasr reads first (``file_path_metas`` -> absolute paths)."""
    metas: dict = {"init_param": "model.pt", "config": "config.yaml"}
    tokenizer_conf = {}
    if "tokens" in extras or "punc_tokens" in extras:
        tokenizer_conf["token_list"] = "tokens.json"
    if "seg_dict" in extras:
        tokenizer_conf["seg_dict_file"] = "seg_dict"
    if "spm" in extras:
        tokenizer_conf["bpemodel"] = _SPM_NAME
    if tokenizer_conf:
        metas["tokenizer_conf"] = tokenizer_conf
    if "am.mvn" in extras:
        metas["frontend_conf"] = {"cmvn_file": "am.mvn"}
    return {
        "framework": "pytorch",
        "task": "punctuation" if name == "punc" else "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": metas,
    }


def _neutral_am_mvn(dim: int = _FEAT_DIM) -> str:
    """Kaldi nnet-format CMVN as shipped with the real models, with shift 0 and scale 1 (identity)."""
    zeros = " ".join(["0"] * dim)
    ones = " ".join(["1"] * dim)
    return (
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {ones} ]\n"
        "</Nnet>\n"
    )


def _train_sentencepiece(directory: Path, seed: int) -> None:
    import sentencepiece as spm

    rng = random.Random(seed)
    sentences = ["".join(rng.choice(_CHARS) for _ in range(rng.randint(4, 16))) for _ in range(400)]
    sentences += ["hello world this is a tiny model", "ok the quick brown fox jumps over the lazy dog"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=800,
        model_type="bpe",
        character_coverage=1.0,
        user_defined_symbols=SENSEVOICE_TAGS,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    (directory / _SPM_NAME).write_bytes(model.getvalue())


def _write_nano_llm(directory: Path, seed: int) -> None:
    """The LLM's directory: a byte-level BPE tokenizer (Qwen's kind) trained here on the test characters, so any
    text encodes and most generated tokens are whole characters, and a tiny Qwen3 config.json sized to it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    llm_dir = directory / NANO_LLM_DIR
    llm_dir.mkdir()
    rng = random.Random(seed)
    sentences = ["".join(rng.choice(_CHARS) for _ in range(rng.randint(4, 16))) for _ in range(600)]
    sentences += ["hello world this is a tiny model", "You are a helpful assistant.", "语音转写成中文："] * 20
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=_NANO_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    tokenizer.save(str(llm_dir / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": _NANO_LLM["max_position_embeddings"],
    }
    (llm_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), "utf-8")
    loaded = AutoTokenizer.from_pretrained(str(llm_dir))
    config = {
        **_NANO_LLM,
        "vocab_size": len(loaded),
        "bos_token_id": loaded.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": loaded.convert_tokens_to_ids("<|im_end|>"),
    }
    (llm_dir / "config.json").write_text(json.dumps(config, indent=2), "utf-8")


def _write_tiktoken(directory: Path) -> None:
    """The CTC head's vocabulary in tiktoken's format (base64 token, rank): the 256 single bytes."""
    import base64

    lines = (f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256))
    (directory / _TIKTOKEN_NAME).write_text("".join(lines), "utf-8")


def _vocab_size(name: str, directory: Path) -> int:
    if name == "punc":
        return len(PUNC_TOKENS)
    if name == "sensevoice":
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(directory / _SPM_NAME)).get_piece_size()
    return len(TOKENS)


def _instantiate(config: dict, vocab_size: int, directory: Path):
    """Build the model the way ``AutoModel.build_model`` does: model_conf, then every top-level key, as kwargs."""
    from inference.engines import funasr_registry

    funasr_registry.prepare(directory, {})  # registers the classes its config.yaml (written above) names
    from funasr.register import tables

    model_class = tables.model_classes.get(config["model"])
    kwargs = {**config.get("model_conf", {}), **{k: v for k, v in config.items() if k != "model_conf"}}
    kwargs["vocab_size"] = vocab_size
    if config["model"] == "FunASRNano":  # it reads its LLM's config and the CTC vocabulary while being built
        kwargs["llm_conf"] = {**config["llm_conf"], "init_param_path": str(directory / NANO_LLM_DIR)}
        kwargs["dataset_conf"] = {
            **config["dataset_conf"],
            "ctc_tokenizer_conf": {"vocab_path": str(directory / _TIKTOKEN_NAME)},
        }
    if config.get("frontend"):
        kwargs["input_size"] = _FEAT_DIM
    return model_class(**kwargs)


def _write_model(name: str, directory: Path, seed: int) -> None:
    import torch
    import yaml

    factory, extras = _SPECS[name]
    config = factory()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8")
    conf_json = _configuration_json(name, extras)
    (directory / "configuration.json").write_text(json.dumps(conf_json, indent=2, ensure_ascii=False), "utf-8")
    if "tokens" in extras:
        (directory / "tokens.json").write_text(json.dumps(TOKENS, ensure_ascii=False), "utf-8")
    if "punc_tokens" in extras:
        (directory / "tokens.json").write_text(json.dumps(PUNC_TOKENS, ensure_ascii=False), "utf-8")
    if "seg_dict" in extras:  # the real SeACo/Paraformer dirs map each unit to itself; hotwords are split with it
        (directory / "seg_dict").write_text("".join(f"{c} {c}\n" for c in _CHARS), "utf-8")
    if "am.mvn" in extras:
        (directory / "am.mvn").write_text(_neutral_am_mvn(), "utf-8")
    if "spm" in extras:
        _train_sentencepiece(directory, seed)
    if "llm" in extras:
        _write_nano_llm(directory, seed)
    if "tiktoken" in extras:
        _write_tiktoken(directory)

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = _instantiate(config, _vocab_size(name, directory), directory)
    finally:
        torch.random.set_rng_state(state)
    torch.save(model.state_dict(), directory / "model.pt")


def _spec_digest(name: str, seed: int) -> str:
    factory, extras = _SPECS[name]
    blob = json.dumps(
        [_BUILDER_VERSION, name, seed, factory(), list(extras), TOKENS, PUNC_TOKENS, SENSEVOICE_TAGS, _NANO_LLM],
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def build_tiny_model(root: Path, name: str, *, seed: int = 0) -> Path:
    """Build (or reuse) the tiny model ``name`` under ``root / name`` and return that directory."""
    if name not in _SPECS:
        raise ValueError(f"unknown tiny model {name!r}; choose from {MODEL_NAMES}")
    if name == "sensevoice" and not sensevoice_available():
        raise RuntimeError("the tiny SenseVoice model needs the 'sentencepiece' package")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Processes sharing `root` (pytest-xdist's workers: tests/conftest.py `tiny_models_root`) build
    # each model once: the others wait here, then find it stamped.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_unlocked(root, name, seed)


def _build_unlocked(root: Path, name: str, seed: int) -> Path:
    target = root / name
    digest = _spec_digest(name, seed)
    stamp = target / _STAMP
    if stamp.is_file() and stamp.read_text() == digest:
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    os.chmod(tmp, 0o755)
    try:
        _write_model(name, tmp, seed)
        (tmp / _STAMP).write_text(digest)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_models(root: Path, names: Iterable[str] | None = None, *, seed: int = 0) -> dict[str, Path]:
    """Build (or reuse) tiny model directories under ``root``; returns ``{name: directory}``.

    ``names`` defaults to "offline" (SeacoParaformer), "online" (ParaformerStreaming), "punc" (CTTransformer) and,
    when ``sentencepiece`` is importable, "sensevoice" (SenseVoiceSmall); "nano" (FunASRNano) only when named.
    """
    if names is None:
        names = [n for n in MODEL_NAMES if n not in _ON_REQUEST and (n != "sensevoice" or sensevoice_available())]
    return {name: build_tiny_model(root, name, seed=seed) for name in names}
