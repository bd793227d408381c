import pytest

from text.hotwords import HotwordFileError, load_hotword_file, merge_hotwords, parse_hotwords_value


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


TERMS = "# 会议术语\n阿里巴巴 30\n达摩院\nmachine learning 50\n语音识别 80\n"
EXPECTED = (("阿里巴巴", 30), ("达摩院", 20), ("machine learning", 50), ("语音识别", 80))


@pytest.mark.parametrize(
    "encoding, data",
    [
        ("utf-8", TERMS.encode("utf-8")),
        ("utf-8 with BOM, CRLF (Windows Notepad)", b"\xef\xbb\xbf" + TERMS.replace("\n", "\r\n").encode("utf-8")),
        ("gbk", TERMS.encode("gbk")),
        ("gb18030", TERMS.encode("gb18030")),
    ],
)
def test_hotword_files_in_every_accepted_encoding_read_the_same(tmp_path, encoding, data):
    path = tmp_path / "hotwords.txt"
    path.write_bytes(data)
    assert load_hotword_file(path) == EXPECTED  # the first hotword keeps no BOM; GBK is not refused


def test_a_bom_before_a_weighted_first_line_is_not_part_of_the_word(tmp_path):
    path = tmp_path / "hot.txt"
    path.write_bytes("\ufeff达摩院 40\n".encode())
    assert load_hotword_file(path) == (("达摩院", 40),)


def test_an_unreadable_encoding_says_which_encodings_are_accepted(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes(TERMS.encode("utf-16"))  # Notepad's "Unicode"
    with pytest.raises(HotwordFileError, match="UTF-8 \\(with or without BOM\\) or GB18030/GBK"):
        load_hotword_file(path)
    path.write_bytes(b"\x81\x30\xff\xfe bad")  # neither UTF-8 nor GB18030
    with pytest.raises(HotwordFileError, match="GB18030/GBK"):
        load_hotword_file(path)


@pytest.mark.parametrize(
    "value, expected",
    [
        ('{"阿里巴巴": 30, "达摩院": 20}', {"阿里巴巴": 30, "达摩院": 20}),
        ('["阿里巴巴", ["达摩院", 40]]', {"阿里巴巴": None, "达摩院": 40}),
        (["FunASR", ["Paraformer", 60]], {"FunASR": None, "Paraformer": 60}),
        ({"FunASR": 30}, {"FunASR": 30}),
        ("阿里巴巴 30\n达摩院\nmachine learning 50", {"阿里巴巴": 30, "达摩院": None, "machine learning": 50}),
        ("\ufeff阿里巴巴 30\r\n达摩院 # the academy\r\n", {"阿里巴巴": 30, "达摩院": None}),
        ("阿里巴巴 30", {"阿里巴巴": 30}),  # one "word weight" line: the weight stays a weight
        ("FunASR 30 Paraformer, 达摩院 40", {"FunASR": 30, "Paraformer": None, "达摩院": 40}),
        ("alpha, beta gamma", {"alpha": None, "beta": None, "gamma": None}),
        ("C# 20\nF#", {"C#": 20, "F#": None}),
    ],
)
def test_one_parser_reads_every_api_form(value, expected):
    assert parse_hotwords_value(value) == expected


def test_api_lists_keep_weights_through_the_protocol_and_the_jobs_options():
    from server.protocol import ProtocolError, parse_hotwords, parse_hotwords_leniently

    assert parse_hotwords("阿里巴巴 30\n达摩院") == (("阿里巴巴", 30), ("达摩院", 20))
    assert parse_hotwords("阿里巴巴 30") == (("阿里巴巴", 30),)
    hotwords, warnings = parse_hotwords_leniently("阿里巴巴 300\n达摩院 0")
    assert hotwords == (("阿里巴巴", 100), ("达摩院", 1)) and len(warnings) == 2
    with pytest.raises(ProtocolError, match="1..100"):
        parse_hotwords("阿里巴巴 300")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_hotwords("[broken")
