"""Inverse text normalisation: spoken zh/en numbers, dates, money and times become what readers expect."""

from __future__ import annotations

import logging

import pytest

from text import itn as itn_module
from text.itn import InverseNormalizer


@pytest.fixture(scope="module")
def itn() -> InverseNormalizer:
    normalizer = InverseNormalizer()
    normalizer.warm_up()
    return normalizer


ZH = [
    # dates: 年月日, not wetext's "2025/03/15"; 号 is written 日
    ("二零二五年三月十五号", "2025年3月15日"),
    ("一九四九年十月一日", "1949年10月1日"),
    ("三月十五号", "3月15日"),
    ("二零二五年三月", "2025年3月"),
    ("二〇二五年三月", "2025年3月"),
    ("会议定在二零二五年", "会议定在2025年"),
    # money: number + the currency word as spoken, not "¥1234" / "€20"
    ("一千二百三十四元", "1234元"),
    ("十二元五角", "12.5元"),
    ("二十欧元", "20欧元"),
    ("两千美元", "2000美元"),
    ("三千万美元", "3000万美元"),
    ("一共二十五块", "一共25块"),
    # percentages, decimals, cardinals
    ("百分之二十五", "25%"),
    ("A股涨了百分之五十点五", "A股涨了50.5%"),
    ("三点一四", "3.14"),
    ("负三点五", "-3.5"),
    ("一百二十三", "123"),
    ("一万两千五百人", "12500人"),
    # times: part of the day in front, clock digits after (not "3:15p.m.")
    ("下午三点十五分", "下午3:15"),
    ("晚上十点半", "晚上10:30"),
    ("三点二十分十秒", "3:20:10"),
    ("二零二五年三月十五号下午三点十五分", "2025年3月15日下午3:15"),
    # digit strings: phone numbers keep every digit, a leading zero and no inserted space
    ("我的电话是一三八一二三四五六七八", "我的电话是13812345678"),
    ("零一零八八八八", "0108888"),
    ("幺幺零", "110"),
    # ordinals and fractions
    ("第三", "第3"),
    ("一起去看第三场", "一起去看第3场"),
    ("第二十一名", "第21名"),
    ("三分之一", "1/3"),
    # units stay Chinese, not "50kg" / "100m" / "30°"
    ("五十公斤", "50公斤"),
    ("一百二十千米", "120千米"),
    ("三十七点五度", "37.5度"),
    # idioms and words next to numbers that are converted
    ("一个人花了三百元", "一个人花了300元"),
    ("万一下午三点十五分下雨", "万一下午3:15下雨"),
    ("他十分努力，考了九十八分", "他十分努力，考了98分"),
    ("第一时间赶到第三现场", "第一时间赶到第3现场"),
    # mixed Chinese/English, and text that already has written forms (a slash it had stays)
    ("我用iPhone十五拍了三百张照片", "我用iPhone15拍了300张照片"),
    ("日期写作2025/03/15，今天是三月十五号", "日期写作2025/03/15，今天是3月15日"),
    ("价格¥100，另加五十元", "价格¥100，另加50元"),
    ('他说"一百"\\ok', '他说"100"\\ok'),
]

EN = [
    ("twenty five dollars", "$25"),
    ("twelve dollars and fifty cents", "$12.50"),
    ("It costs three hundred dollars, right?", "It costs $300, right?"),
    ("Twenty Five Dollars, please.", "$25, please."),
    ("one hundred and twenty three", "123"),
    ("three point five percent", "3.5%"),
    ("one point five million", "1.5 million"),
    ("three thirty pm", "3:30 p.m."),
    ("half past three", "3:30"),
    ("march fifteenth twenty twenty five", "March 15 2025"),
    ("see you on may fifth", "see you on May 5"),
    ("nineteen ninety eight", "1998"),
    ("the twenty first", "the 21st"),
    ("tenth", "10th"),
    ("call me at five five five one two three four", "call me at 5551234"),
    ('say "one hundred" now', 'say "100" now'),
    ("at first it cost twenty dollars", "at first it cost $20"),
    ("one of them paid forty two dollars", "one of them paid $42"),
]

# Each would change under wetext's plain output ("998 11", "他10分努力", "4~5个人", "3322", "10几个", "第1时间",
# "wait a 2nd", "emailmeatjohn@gmail.com") or is a common idiom that must survive.
UNTOUCHED = [
    "一个人",
    "一起",
    "万一",
    "九九八十一",
    "他十分努力",
    "四五个人",
    "三三两两",
    "十几个包子",
    "安全第一",
    "wait a second",
    "email me at john at gmail dot com",
    "今天是2025年3月15日，花了1234元",
    "I paid $25 at 3:30 pm",
]


@pytest.mark.parametrize(("spoken", "written"), ZH + EN)
def test_written_forms(itn, spoken, written):
    assert itn(spoken) == written


@pytest.mark.parametrize("text", UNTOUCHED)
def test_left_as_spoken(itn, text):
    assert itn(text) == text


def test_empty_and_blank(itn):
    assert itn("") == ""
    assert itn("  \n") == "  \n"


def test_language_hint_overrides_detection(itn):
    assert itn("三点一四") == "3.14"
    assert itn("三点一四", "en") == "三点一四"
    assert itn("twenty five dollars") == "$25"
    assert itn("twenty five dollars", "zh") == "twenty five dollars"
    assert itn("一百", "zh-CN") == "100"
    assert itn("one hundred", "auto") == "100"
    assert itn("one hundred", "ja") == "one hundred"  # a language without grammar: untouched


def test_configured_languages_only():
    english_only = InverseNormalizer(languages=("en",))
    assert english_only("一百") == "一百"
    with pytest.raises(ValueError, match="itn languages"):
        InverseNormalizer(languages=("zh", "fr"))


def test_long_input(itn):
    sentence = "今天是二零二五年三月十五号我花了一千二百三十四元然后下午三点十五分回家"
    written = "今天是2025年3月15日我花了1234元然后下午3:15回家"
    assert itn(sentence * 140) == written * 140  # over 5,000 characters with no punctuation to split at
    english = "i paid twenty five dollars at three thirty pm and it was great "
    assert itn(english * 80) == "i paid $25 at 3:30 p.m. and it was great " * 80


@pytest.mark.parametrize("text", ["\x00", "\ud800", "🙂" * 10, '"\\', "一" * 300, "。，！", "\t\t"])
def test_odd_input_never_raises(itn, text):
    assert isinstance(itn(text), str)


def test_failure_returns_input_and_warns_once(monkeypatch, caplog):
    normalizer = InverseNormalizer()
    normalizer.warm_up()

    def broken(*args, **kwargs):
        raise RuntimeError("grammar exploded")

    monkeypatch.setattr(normalizer._wetext, "tag", broken)
    with caplog.at_level(logging.DEBUG, logger=itn_module.__name__):
        assert normalizer("一千二百三十四元") == "一千二百三十四元"
        assert normalizer("twenty five dollars") == "twenty five dollars"
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1


def test_no_path_through_grammar_leaves_piece_unchanged(monkeypatch):
    normalizer = InverseNormalizer()
    normalizer.warm_up()
    monkeypatch.setattr(normalizer._wetext, "tag", lambda *args, **kwargs: "")
    assert normalizer("一百，二百") == "一百，二百"
