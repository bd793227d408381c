import pytest

from text.hotwords import HotwordFileError, load_hotword_file, merge_hotwords


def test_hotword_file_reads_funasr_format(tmp_path):
    path = tmp_path / "hotwords.txt"
    path.write_text("# lecture terms\n阿里巴巴 30\n达摩院\n machine learning 50 \n\nFunASR # the toolkit\n", "utf-8")
    assert load_hotword_file(path) == (("阿里巴巴", 30), ("达摩院", 20), ("machine learning", 50), ("FunASR", 20))


@pytest.mark.parametrize("content, where", [("词 0\n", ":1:"), ("ok\n词 101\n", ":2:")])
def test_bad_weight_names_file_and_line(tmp_path, content, where):
    path = tmp_path / "hot.txt"
    path.write_text(content, "utf-8")
    with pytest.raises(HotwordFileError, match=where):
        load_hotword_file(path)


def test_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(HotwordFileError, match="cannot be read"):
        load_hotword_file(tmp_path / "bin")
    with pytest.raises(HotwordFileError, match="cannot be read"):
        load_hotword_file(tmp_path / "missing.txt")


def test_stream_hotwords_extend_and_override_the_servers():
    server = (("阿里巴巴", 30), ("达摩院", 20))
    assert merge_hotwords(server, (("达摩院", 80), ("paraformer", 20))) == (
        ("阿里巴巴", 30),
        ("达摩院", 80),
        ("paraformer", 20),
    )
    assert merge_hotwords(server, ()) == server
