"""The FSMN scorer against funasr's own FSMN encoder and frontend on the same weights."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.vad_fsmn import FsmnScorer, packaged_model_dir
from tests.speech import compose

ROOT = Path(__file__).resolve().parent.parent


def test_matches_funasr_reference_and_is_chunking_invariant(scorer: FsmnScorer):
    from inference.engines import funasr_registry

    funasr_registry.import_package()  # these two modules, not every model funasr has (~10 s)
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.fsmn_vad_streaming.encoder import FSMN

    audio = compose([0.4, "hello world", 0.5, "good morning", 0.3]).audio
    model_dir = packaged_model_dir()
    frontend = WavFrontend(
        cmvn_file=str(model_dir / "am.mvn"),
        fs=16000,
        window="hamming",
        n_mels=80,
        frame_length=25,
        frame_shift=10,
        dither=0.0,
        lfr_m=5,
        lfr_n=1,
    )
    feats, _ = frontend(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
    encoder = FSMN(
        input_dim=400,
        input_affine_dim=140,
        fsmn_layers=4,
        linear_dim=250,
        proj_dim=128,
        lorder=20,
        rorder=0,
        lstride=1,
        rstride=0,
        output_affine_dim=140,
        output_dim=248,
    )
    weights = torch.load(model_dir / "model.pt", map_location="cpu")
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items()})
    encoder.eval()
    with torch.no_grad():
        reference = 1.0 - encoder(feats, {})[0, :, 0].numpy()

    whole = scorer.score([(scorer.new_state(), audio)])[0]
    state = scorer.new_state()
    chunked = np.concatenate([scorer.score([(state, c)])[0] for c in np.array_split(audio, 97)])
    n = len(whole)
    assert n >= len(reference) - 3  # only FSMN's 2-frame look-ahead at the very end is missing
    np.testing.assert_allclose(whole, reference[:n], atol=1e-4)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    # Not a constant: speech frames score high (digital silence is left to the energy gate).
    spans = compose([0.4, "hello world", 0.5, "good morning", 0.3]).spans
    inside = np.concatenate([whole[a // 160 + 5 : b // 160 - 5] for a, b in spans])
    assert (inside > 0.5).mean() > 0.8


def test_batched_streams_equal_separate_streams(scorer: FsmnScorer):
    a = compose([0.3, "hello world", 0.3]).audio
    b = compose([0.2, "good morning everyone", 0.4]).audio[: len(a)]
    sa, sb, s1, s2 = (scorer.new_state() for _ in range(4))
    batched_a, batched_b, alone_a, alone_b = [], [], [], []
    for chunk_a, chunk_b in zip(np.array_split(a, 20), np.array_split(b, 20)):
        pa, pb = scorer.score([(sa, chunk_a), (sb, chunk_b)])
        batched_a.append(pa)
        batched_b.append(pb)
        alone_a.append(scorer.score([(s1, chunk_a)])[0])
        alone_b.append(scorer.score([(s2, chunk_b)])[0])
    np.testing.assert_allclose(np.concatenate(batched_a), np.concatenate(alone_a), atol=1e-5)
    np.testing.assert_allclose(np.concatenate(batched_b), np.concatenate(alone_b), atol=1e-5)


def test_streams_of_different_lengths_batched_together_equal_separate_streams(scorer: FsmnScorer):
    # Chunks of 1.0 and 0.8 s share one padded group (within 1.5x of each other) longer than the
    # memory's 32-frame blocks: the padded path's caches and memory must match scoring alone.
    a = compose([0.3, "hello world", 0.3]).audio
    b = compose([0.2, "good morning everyone", 0.4]).audio
    sa, sb, s1, s2 = (scorer.new_state() for _ in range(4))
    for start in range(0, min(len(a), len(b)) - 16000, 16000):
        chunk_a, chunk_b = a[start : start + 16000], b[start : start + 12800]
        pa, pb = scorer.score([(sa, chunk_a), (sb, chunk_b)])
        np.testing.assert_allclose(pa, scorer.score([(s1, chunk_a)])[0], atol=1e-5)
        np.testing.assert_allclose(pb, scorer.score([(s2, chunk_b)])[0], atol=1e-5)


def test_vectorised_fbank_matches_kaldi_native_fbank():
    import kaldi_native_fbank as knf

    from inference.fbank import log_mel, split_frames

    opts = knf.FbankOptions()  # the options funasr's frontend passes for fsmn-vad
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    audio = compose([0.2, "hello world", 0.3]).audio * 32768
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, audio.tolist())
    reference = np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    frames, consumed = split_frames(audio)
    ours = log_mel(frames)
    assert ours.shape == reference.shape and consumed == len(frames) * 160
    np.testing.assert_allclose(ours, reference, atol=1e-3)


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_process_scorer_matches_in_process_scorer(scorer: FsmnScorer, workers):
    from inference.vad_process import ProcessScorer

    remote = ProcessScorer(workers=workers)  # with 2, the two streams live in different processes
    try:
        a = compose([0.3, "hello world", 0.3]).audio
        b = compose([0.2, "good morning everyone", 0.4]).audio
        local_states = [scorer.new_state(), scorer.new_state()]
        remote_states = [remote.new_state(), remote.new_state()]
        for chunk_a, chunk_b in zip(np.array_split(a, 7), np.array_split(b, 7)):
            local = scorer.score(list(zip(local_states, [chunk_a, chunk_b])))
            far = remote.score(list(zip(remote_states, [chunk_a, chunk_b])))
            for x, y in zip(local, far):
                np.testing.assert_allclose(x, y, atol=1e-4)
        del remote_states  # released handles are dropped in the worker on the next call
        assert remote.score([(remote.new_state(), a[:1600])])[0].shape == (6,)
    finally:
        remote.close()


@pytest.fixture
def remote():
    """The FSMN scorer in one worker process, as the server runs it."""
    from inference.vad_process import ProcessScorer

    scorer = ProcessScorer()
    yield scorer
    scorer.close()


def int16_speech(*parts) -> np.ndarray:
    """What sessions send the scorer: int16 samples off the wire."""
    return (compose(list(parts)).audio * 32768).round().astype(np.int16)


def test_a_dead_vad_worker_is_replaced(remote):
    import os
    import signal

    audio = compose([0.3, "hello world", 0.3]).audio
    first = remote.score([(remote.new_state(), audio)])[0]
    os.kill(remote.worker_pids[0], signal.SIGKILL)
    again = remote.score([(remote.new_state(), audio)])[0]  # answered by a fresh worker
    np.testing.assert_allclose(again, first, atol=1e-4)


def test_async_scoring_survives_a_killed_worker(scorer: FsmnScorer, remote):
    import asyncio
    import os
    import signal

    pcm = int16_speech(0.3, "hello world", 0.3)

    async def run():
        first = (await remote.score_async([(remote.new_state(), pcm)]))[0]
        os.kill(remote.worker_pids[0], signal.SIGKILL)
        again = (await remote.score_async([(remote.new_state(), pcm)]))[0]
        return first, again

    first, again = asyncio.run(run())
    np.testing.assert_allclose(first, scorer.score([(scorer.new_state(), pcm)])[0], atol=1e-4)
    np.testing.assert_allclose(again, first, atol=1e-4)


def test_batches_pipelined_into_one_worker_come_back_to_their_callers(scorer: FsmnScorer, remote):
    # The server sends the next batch while the worker scores one; replies must find their own
    # callers. Each batch here is ~1.3 MB, more than the pipe holds: the rest goes as it drains.
    import asyncio

    phrases = ["hello world", "good morning everyone", "please open the door"]
    clips = [int16_speech(0.3, p, 0.3)[:16000] for p in phrases]
    batches = [[(remote.new_state(), clip) for _ in range(40)] for clip in clips]

    async def run():
        return await asyncio.gather(*(remote.score_async(batch) for batch in batches))

    answers = asyncio.run(run())
    for clip, answer in zip(clips, answers):
        expected = scorer.score([(scorer.new_state(), clip)])[0]
        assert len(answer) == 40
        for probs in answer:
            np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_a_worker_killed_with_batches_in_flight_answers_them_all(scorer: FsmnScorer, remote):
    import asyncio
    import os
    import signal

    pcm = int16_speech(0.3, "hello world", 0.3)
    expected = scorer.score([(scorer.new_state(), pcm)])[0]

    async def run():
        calls = [asyncio.ensure_future(remote.score_async([(remote.new_state(), pcm)])) for _ in range(3)]
        await asyncio.sleep(0)  # all three are in the pipe
        os.kill(remote.worker_pids[0], signal.SIGKILL)
        return await asyncio.gather(*calls)

    for answer in asyncio.run(run()):
        np.testing.assert_allclose(answer[0], expected, atol=1e-4)  # fresh states on the new worker


def probe_with_speech(probe: str, tmp_path) -> subprocess.CompletedProcess:
    """Run `probe` in a fresh Python in the project root, with the path of an .npy of int16 speech
    ("hello world") as its argument."""
    speech = tmp_path / "speech.npy"
    np.save(speech, int16_speech(0.3, "hello world", 0.3))
    return subprocess.run(
        [sys.executable, "-c", probe, str(speech)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_server_process_on_whisper_never_imports_torch(tmp_path):
    # With the VAD in its worker process (the default), the scorer the server loads scores speech
    # and torch is not imported in the server process: on Whisper it never needs torch, and
    # importing it cost ~2.5 s of every start (f8a6779; the worker itself: the test below).
    probe = (
        "import sys\n"
        "import numpy as np\n"
        "from inference import loading\n"
        "from settings import config\n"
        "scorer = loading.vad_scorer(config.load())\n"
        "audio = np.load(sys.argv[1])\n"
        "probabilities = scorer.score([(scorer.new_state(), audio)])[0]\n"
        "print('torch' in sys.modules, len(scorer.worker_pids), float(probabilities.max()))\n"
        "scorer.close()\n"
    )
    done = probe_with_speech(probe, tmp_path)
    torch_imported, workers, loudest = done.stdout.split()
    assert (torch_imported, workers) == ("False", "1"), done.stderr[-2000:]
    assert float(loudest) > 0.9  # the worker heard the speech


def test_weights_read_with_numpy_equal_torch_load(tmp_path):
    import pickle
    import zipfile

    from inference.pt_weights import load_state_dict

    path = packaged_model_dir() / "model.pt"
    ours = load_state_dict(path)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(reference)
    for name, tensor in reference.items():
        assert ours[name].dtype == np.float32 and np.array_equal(ours[name], tensor.numpy()), name
    # Views, other dtypes and parameters, as torch.save writes them.
    odd = {
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "slice": torch.arange(10)[3:7],
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "half": torch.ones(2, dtype=torch.float16),
        "parameter": torch.nn.Parameter(torch.ones(2)),
    }
    torch.save(odd, tmp_path / "odd.pt")
    for name, array in load_state_dict(tmp_path / "odd.pt").items():
        expected = odd[name].detach().numpy()
        assert array.dtype == expected.dtype and np.array_equal(array, expected), name
    # A damaged file fails loudly (zip CRC), never gives other numbers.
    damaged = bytearray(path.read_bytes())
    at = damaged.index(b"model/data/4") + 200
    damaged[at : at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "damaged.pt").write_bytes(damaged)
    with pytest.raises(zipfile.BadZipFile):
        load_state_dict(tmp_path / "damaged.pt")
    # Anything but a plain state dict is refused, not run.
    torch.save({"x": torch.ones(1), "f": print}, tmp_path / "code.pt")
    with pytest.raises(pickle.UnpicklingError, match="print is not part of a plain state dict"):
        load_state_dict(tmp_path / "code.pt")


def test_the_vad_worker_scores_speech_without_torch(tmp_path):
    # The VAD worker's start no longer waits for `import torch` (~2.5 s): the worker's main
    # function, run here in a fresh process, loads the weights and scores speech with numpy alone.
    probe = (
        "import sys, threading\n"
        "from multiprocessing import Pipe\n"
        "import numpy as np\n"
        "from inference import vad_process as vp\n"
        "requests, to_worker = Pipe(duplex=False)\n"
        "from_worker, replies = Pipe(duplex=False)\n"
        "worker = threading.Thread(target=vp._worker_main, args=(requests, replies, None))\n"
        "worker.start()\n"
        "reader = vp._FrameReader()\n"
        "assert vp._read_frame_blocking(from_worker.fileno(), reader) == 'ready'\n"
        "vp._write_frame(to_worker.fileno(), ([], [(0, np.load(sys.argv[1]))]))\n"
        "probabilities = vp._read_frame_blocking(from_worker.fileno(), reader)[0]\n"
        "vp._write_frame(to_worker.fileno(), None)\n"
        "worker.join()\n"
        "print('torch' in sys.modules, float(probabilities.max()))\n"
    )
    done = probe_with_speech(probe, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    torch_imported, loudest = done.stdout.split()
    assert torch_imported == "False"
    assert float(loudest) > 0.9  # the worker heard the speech
