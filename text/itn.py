"""Inverse text normalisation of captions (spoken numbers, dates, money, times -> written forms) with wetext."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

log = logging.getLogger(__name__)

SUPPORTED = ("zh", "en")
# Hints as engines spell them ("zh-CN", "en_US", "English"); "auto" or "" means detect.
_HINTS = {"zh": "zh", "chinese": "zh", "en": "en", "english": "en"}
# Han ideographs only: kana, Hangul or CJK punctuation alone say nothing about Chinese numbers.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# The English grammar returns nothing for a sentence with '"', '\' or a tab in it, and tagging cost grows faster
# than linearly with length (about 0.5 s for 1,600 Chinese characters at once, 4 ms for 32), so text is tagged
# piece by piece between these breaks, which never fall inside a spoken number.
_BREAKS = re.compile(r'(["\\\t-\r]|[。！？；，、：]|[.!?;:,](?=\s))')
_MAX_PIECE_CHARS = 100
_ZH_NUMBERISH = set("零〇一二三四五六七八九十百千万亿两幺点负几年月日号时分秒元块角毛之第") | set("0123456789")
_EN_NUMBER_WORD = re.compile(
    r"(zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|\w+ty|hundred|thousand"
    r"|million|billion|point|and|a|first|second|third|\w+th|dollars?|cents?|percent|[ap]m?)[\W]*",
    re.IGNORECASE,
)

# Tagger output: `name { key: "value" key: "value" }`, values with \" and \\ escaped.
_TOKEN = re.compile(r'(\w+) \{((?: \w+: "(?:[^"\\]|\\.)*")*) \}', re.DOTALL)
_MEMBER = re.compile(r'(\w+): "((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# Tokens whose value is the input itself. English "whitelist" would abbreviate ("doctor" -> "dr."), which is
# not ITN's job in a caption, so it is kept as spoken too.
_LITERAL = {"char", "word", "punctuation", "whitelist"}
# Members the grammars add rather than read from the input.
_INSERTED = {"preserve_order", "kind", "style"}

_ZH_DIGIT = {"零": "0", "〇": "0", "幺": "1", **{c: str(i) for i, c in enumerate("一二三四五六七八九", 1)}}
# Ordinals the grammar leaves alone: 第 + one numeral ("第三" -> "第3"). Fixed phrases that merely contain one
# stay words; they are matched first so the ordinal branch never sees them.
_ZH_ORDINAL = re.compile(
    r"(?P<keep>第一(?:时间|手|线|印象|人称)|第[二三]人称|第三(?:者|方|世界)|(?:安全|友谊|天下)第一)"
    r"|第(?P<num>[一二三四五六七八九十])(?![零〇一二三四五六七八九十百千万亿两点])"
)
_ZH_ORDINAL_VALUE = {c: str(i) for i, c in enumerate("一二三四五六七八九十", 1)}
# English ordinals first..ninth stay words (AP/Chicago spell them out; "wait a second", "at first").
_EN_SMALL_ORDINALS = {"first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"}
_EN_MONTH = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|december)\b")


class _Unaligned(Exception):
    """The tagger's tokens could not be matched back onto the input text."""


@dataclass(frozen=True)
class _Token:
    name: str
    members: tuple[tuple[str, str], ...]  # in input order, unescaped
    raw: str  # as the tagger wrote it, for the verbalizer

    def get(self, key: str) -> str:
        return next((value for name, value in self.members if name == key), "")


class InverseNormalizer:
    """Rewrites spoken forms in a caption as written ones; leaves the text unchanged when anything goes wrong.

    Grammars load on first use (about 0.5 s; `warm_up()` does it ahead of time). Meant for one executor thread;
    loading is locked so that a second thread is safe too.
    """

    def __init__(self, languages: Iterable[str] = SUPPORTED) -> None:
        self.languages = tuple(languages)
        unknown = [lang for lang in self.languages if lang not in SUPPORTED]
        if unknown:
            raise ValueError(f"itn languages: {unknown} not supported (choose from {list(SUPPORTED)})")
        self._wetext: ModuleType | None = None
        self._ready: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    def warm_up(self) -> None:
        """Load the grammars now, so that the first caption does not pay for it."""
        for lang in self.languages:
            self._grammar(lang)

    def __call__(self, text: str, language: str | None = None) -> str:
        try:
            if not text or text.isspace():
                return text
            lang = self._language(text, language)
            if lang is None:
                return text
            return self._normalize(text, lang)
        except Exception:  # a caption must never be lost to post-processing
            self._warn(text)
            return text

    def _language(self, text: str, hint: str | None) -> str | None:
        key = re.split(r"[-_]", hint.strip().lower())[0] if hint else ""
        lang: str | None
        if key in ("", "auto"):
            lang = "zh" if _HAN.search(text) else "en"
        else:
            lang = _HINTS.get(key)
        return lang if lang in self.languages else None

    def _grammar(self, lang: str) -> ModuleType:
        if lang not in self._ready:
            with self._lock:
                if self._wetext is None:
                    started = time.perf_counter()
                    import wetext  # loads every grammar it ships at import

                    self._wetext = wetext
                    log.info("itn: wetext grammars loaded in %.2f s", time.perf_counter() - started)
                # The first pass through a grammar pages its arcs in; pay that here, not on a caption.
                self._wetext.tag("一百" if lang == "zh" else "one hundred", lang, "itn")
                self._ready.add(lang)
        assert self._wetext is not None
        return self._wetext

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("itn failed; captions are left as spoken where it fails (first: %r)", text[:80], exc_info=True)
        else:
            log.debug("itn failed on %r", text[:80], exc_info=True)

    def _normalize(self, text: str, lang: str) -> str:
        wetext = self._grammar(lang)
        out: list[str] = []
        for index, piece in enumerate(_BREAKS.split(text)):
            if index % 2:  # a break itself
                out.append(piece)
                continue
            for part in _split_long(piece, lang):
                try:
                    out.append(self._normalize_piece(wetext, part, lang))
                except _Unaligned:
                    self._warn(part)
                    out.append(part)
        result = "".join(out)
        return _ZH_ORDINAL.sub(_zh_ordinal, result) if lang == "zh" else result

    def _normalize_piece(self, wetext: ModuleType, piece: str, lang: str) -> str:
        if not piece.strip():
            return piece
        # The English grammar knows lower-case words only; spans found in the lower-cased copy are used to copy
        # the original (its capitals intact) wherever nothing is rewritten.
        # The grammar does not read "〇" as a digit ("二〇二五年" -> "二〇25年"); "零" is the same digit, same length.
        source = piece.lower() if lang == "en" else piece.replace("〇", "零")
        if len(source) != len(piece):  # a rare character whose lower case is longer: spans would not line up
            source = piece
        tokens = _parse(wetext.tag(source, lang, "itn"))
        if not tokens:
            raise _Unaligned("the grammar found no path through the text")
        out: list[str] = []
        copied = cursor = 0
        for token in tokens:
            if token.name in _LITERAL:
                cursor = _match(source, token.get("value"), cursor)
                continue
            start = end = _skip_space(source, cursor)
            for key, value in token.members:
                if key not in _INSERTED and value:
                    end = _match(source, value, end)
            if end == start:
                raise _Unaligned(f"{token.name} token consumed no input")
            out.append(piece[copied:start])
            out.append(self._render(wetext, token, piece[start:end], piece[end:], lang))
            copied = cursor = end
        if _skip_space(source, cursor) != len(source):
            raise _Unaligned("tokens do not cover the whole text")
        out.append(piece[copied:])
        return "".join(out)

    def _render(self, wetext: ModuleType, token: _Token, spoken: str, after: str, lang: str) -> str:
        written = wetext.verbalize(wetext.reorder(token.raw, lang, "itn"), lang, "itn")
        if not written:
            return spoken
        if lang == "zh":
            return _render_zh(wetext, token, spoken, after, written)
        return _render_en(token, spoken, written)


def _parse(tagged: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    for match in _TOKEN.finditer(tagged):
        if tagged[position : match.start()].strip():
            raise _Unaligned("unreadable tagger output")
        members = tuple((key, _ESCAPE.sub(r"\1", value)) for key, value in _MEMBER.findall(match.group(2)))
        tokens.append(_Token(match.group(1), members, match.group(0)))
        position = match.end()
    if tagged[position:].strip():
        raise _Unaligned("unreadable tagger output")
    return tokens


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _match(source: str, value: str, position: int) -> int:
    """End of `value` where it comes next in `source`; the English tagger drops the spaces between words."""
    at = position if value.isspace() else _skip_space(source, position)
    if not value or not source.startswith(value, at):
        raise _Unaligned(f"expected {value!r} at {at}")
    return at + len(value)


def _split_long(piece: str, lang: str) -> list[str]:
    """Cuts a long unpunctuated piece where no number can be read across the cut."""
    parts: list[str] = []
    while len(piece) > _MAX_PIECE_CHARS:
        cuts = range(_MAX_PIECE_CHARS, _MAX_PIECE_CHARS // 2, -1)
        cut = next((i for i in cuts if _safe_cut(piece, i, lang)), None)
        if cut is None:  # numbers all the way: tag it whole, slowly but correctly
            break
        parts.append(piece[:cut])
        piece = piece[cut:]
    parts.append(piece)
    return parts


def _safe_cut(piece: str, i: int, lang: str) -> bool:
    if lang == "zh":
        return piece[i - 1] not in _ZH_NUMBERISH and piece[i] not in _ZH_NUMBERISH
    if not piece[i].isspace() or piece[i - 1].isspace():
        return False
    before = piece[:i].rsplit(None, 1)[-1]
    after = piece[i : i + _MAX_PIECE_CHARS].split(None, 1)
    return not _EN_NUMBER_WORD.fullmatch(before) and not (after and _EN_NUMBER_WORD.fullmatch(after[0]))


def _zh_ordinal(match: re.Match[str]) -> str:
    if match.group("keep"):
        return match.group(0)
    return "第" + _ZH_ORDINAL_VALUE[match.group("num")]


def _render_zh(wetext: ModuleType, token: _Token, spoken: str, after: str, written: str) -> str:
    if "~" in written:  # "四五个" -> "4~5个": GB/T 15835 keeps estimates from adjacent numbers in characters
        return spoken
    if token.name == "date":
        return _zh_date(token, spoken, written)
    if token.name == "money":
        return _zh_money(token, spoken, written)
    if token.name == "time":
        return _zh_time(token, spoken, written)
    if token.name == "measure":
        return _zh_measure(wetext, spoken, written)
    if token.name == "cardinal":
        return _zh_cardinal(spoken, after, written)
    return written  # fraction "1/3", math "3:2", "1+1=2"


_DATE_FIELDS = (("year", "年"), ("month", "月"), ("day", "日"))


def _zh_date(token: _Token, spoken: str, written: str) -> str:
    """Slashes to 年月日: "2025/03/15" -> "2025年3月15日", "03/15" -> "3月15日", "2025/03" -> "2025年3月".

    Which fields the slashes separate is read from the token, never guessed from the digits; a year alone is
    already written "2025年".
    """
    if "/" not in written:
        return written
    fields = written.split("/")
    units = [unit for key, unit in _DATE_FIELDS if token.get(key)]
    if len(fields) != len(units) or not all(field.isdigit() for field in fields):
        return spoken
    # A year keeps its digits as spoken ("二五年" -> "25年"); months and days lose the zero padding.
    return "".join((field if unit == "年" else str(int(field))) + unit for field, unit in zip(fields, units))


_MONEY = re.compile(r"[^\d-]*(-?\d[\d,]*(?:\.\d+)?)([万亿]*)")


def _zh_money(token: _Token, spoken: str, written: str) -> str:
    """The number, then the currency word as spoken: "¥1234" -> "1234元", "€20" -> "20欧元"."""
    match = _MONEY.fullmatch(written)
    currency = token.get("currency")
    if not match or not currency:
        return spoken
    return match.group(1) + match.group(2) + currency


_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?(?:[ap]\.m\.)?")


def _zh_time(token: _Token, spoken: str, written: str) -> str:
    """Part of the day in front, as Chinese writes it, not an English suffix: "3:15p.m." -> "下午3:15"."""
    match = _CLOCK.fullmatch(written.replace(" ", ""))
    if not match:
        return spoken
    hour, minute, second = match.groups()
    return token.get("noon") + f"{int(hour)}:{minute}" + (f":{second}" if second else "")


_LATIN_UNIT = re.compile(r"(-?\d+(?:\.\d+)?)\s*([A-Za-z°/²³]+)")


def _zh_measure(wetext: ModuleType, spoken: str, written: str) -> str:
    if spoken == "十分":  # "他十分努力": the adverb "very" is far more common than ten points or minutes
        return spoken
    if "刻" in spoken:  # quarter hours: "四点一刻" would come out as "4.1刻"
        return spoken
    match = _LATIN_UNIT.fullmatch(written)
    if not match:
        return written  # "25%", "50岁", "300万元", "100块"
    # "50kg", "100m", "30°" read as foreign in a Chinese caption: keep the number, put back the spoken unit.
    # The unit starts where the spoken number ends, found by reading ever shorter prefixes ("一百千米" is 100 + 千米).
    for cut in range(len(spoken) - 1, 0, -1):
        tokens = _parse(wetext.tag(spoken[:cut], "zh", "itn"))
        if len(tokens) == 1 and tokens[0].name == "cardinal":
            if wetext.verbalize(wetext.reorder(tokens[0].raw, "zh", "itn"), "zh", "itn") == match.group(1):
                return match.group(1) + spoken[cut:]
    return written


def _zh_cardinal(spoken: str, after: str, written: str) -> str:
    if after.lstrip().startswith("几"):  # "十几个": estimates with 几 stay in characters (GB/T 15835)
        return spoken
    if len(spoken) > 1 and all(char in _ZH_DIGIT or char == "两" for char in spoken):
        # Read digit by digit (phones, rooms, years): map each digit, keeping a leading zero and no space the
        # verbalizer inserts ("零一零八八八八" -> "0108 888"). Nobody reads digits as 两: "三三两两" is an idiom.
        return spoken if "两" in spoken else "".join(_ZH_DIGIT[char] for char in spoken)
    if any(char.isspace() for char in written):  # "九九八十一" -> "998 11": one reading split in two is an idiom
        return spoken
    return written


def _render_en(token: _Token, spoken: str, written: str) -> str:
    if token.name == "electronic":  # it swallows the words around a spoken address: "emailmeatjohn@gmail.com"
        return spoken
    if token.name == "ordinal" and spoken.lower() in _EN_SMALL_ORDINALS:
        return spoken
    if token.name == "measure":
        return written.replace(" %", "%")  # "3.5 %" -> "3.5%"
    if token.name == "time":
        return re.sub(r"^0(?=\d)", "", written)  # "03:30 p.m." -> "3:30 p.m."
    if token.name == "date":
        return _EN_MONTH.sub(lambda match: match.group(0).capitalize(), written)  # "march 15" -> "March 15"
    return written
