import pytest

from settings import config


def test_default_config_loads_with_documented_defaults():
    cfg = config.load()
    assert cfg.server.port == 10095
    assert cfg.endpointing.silence_ms == 300
    assert cfg.endpointing.max_segment_s == 30.0


def test_every_default_in_config_toml_has_a_comment():
    lines = [ln for ln in config.DEFAULT_CONFIG_PATH.read_text().splitlines() if "=" in ln and not ln.startswith("#")]
    assert lines and all("#" in ln for ln in lines), [ln for ln in lines if "#" not in ln]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"endpointing": {"silence_ms": -5}}, "endpointing.silence_ms must be between"),
        ({"endpointing": {"max_segment_s": 90}}, "endpointing.max_segment_s must be between"),
        ({"server": {"port": "http"}}, "server.port must be an integer"),
        ({"inference": {"device": "tpu"}}, "inference.device must be"),
        ({"inference": {"engine": "nope"}}, "inference.engine must be one of"),
        # removed: any audio_fs 8000..192000 is taken now
        ({"audio": {"sample_rates_hz": [8000]}}, "unknown setting(s) in [audio]: sample_rates_hz"),
        ({"audio": {"ring_buffer_s": 5.0}}, "audio.ring_buffer_s must be at least"),
        (
            {"whisper": {"long_segment_s": 3}, "endpointing": {"long_silence_ms": 400}},
            "endpointing.long_silence_ms (400) must not",
        ),
        ({"whisper": {"long_segment_s": -1.0}}, "whisper.long_segment_s must be between"),
        ({"funasr": {"long_segment_s": 90}}, "funasr.long_segment_s must be between"),
        # moved to [whisper] and [funasr] (session 14): an old config says which key is unknown
        ({"endpointing": {"long_segment_s": 3.0}}, "unknown setting(s) in [endpointing]: long_segment_s"),
        ({"server": {"bogus": 1}}, "unknown setting(s) in [server]: bogus"),
        ({"inference": {"vad_process": "yes"}}, "inference.vad_process must be true or false"),
        ({"inference": {"keep_decode_memory": 1}}, "inference.keep_decode_memory must be true or false"),
        ({"inference": {"vad_max_wait_ms": 5000}}, "inference.vad_max_wait_ms must be between"),
        ({"inference": {"vad_workers": 0}}, "inference.vad_workers must be between"),
        ({"inference": {"vad_overload_ms": -1}}, "inference.vad_overload_ms must be between"),
        ({"server": {"send_timeout_s": 0}}, "server.send_timeout_s must be between"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_setting(overrides, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(None, overrides)
    assert message in str(err.value)


def test_missing_and_malformed_files_are_clear(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad)


def test_cli_reports_bad_config_without_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text(config.DEFAULT_CONFIG_PATH.read_text().replace("silence_ms = 300", "silence_ms = 0"))
    run = subprocess.run([sys.executable, "run_server.py", "--config", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    assert "endpointing.silence_ms must be between" in run.stderr
    assert "Traceback" not in run.stderr


def test_unavailable_device_is_one_clear_line():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "run_server.py", "--device", "cuda:0", "--port", "0"], capture_output=True, text=True
    )
    assert run.returncode == 1
    # the device is checked per engine (the embedded Whisper asks CTranslate2, not torch)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cuda:0" in errors[0] and "no CUDA device" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
