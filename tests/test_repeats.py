"""The last hallucination guard: a phrase repeated back to back more than twice is cut to two."""

from text.repeats import collapse_repeats


def test_a_character_loop_is_cut_to_two():
    assert collapse_repeats("请" * 100 + "好的") == ("请请好的", 98)


def test_a_phrase_loop_is_cut_to_two_whatever_its_case_and_punctuation():
    text, removed = collapse_repeats("Ask not, ask not, ask not, ask not. What now")
    assert text == "Ask not, ask not. What now" and removed == 2
    sentence = "the cat sat on the mat. "
    assert collapse_repeats(sentence * 20)[0] == (sentence * 2).strip()
    assert collapse_repeats("我们走吧" * 5)[0] == "我们走吧我们走吧"


def test_speech_that_repeats_at_most_twice_is_untouched():
    for text in ("no no, I said so", "hello world", "that that is is that that is not", "very very good"):
        assert collapse_repeats(text) == (text, 0)
