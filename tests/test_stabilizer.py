from streaming.stabilizer import PartialStabilizer


def test_words_become_stable_when_two_decodes_agree_and_never_retract():
    s = PartialStabilizer()
    first = s.update("the quick")
    assert (first.stable, first.unstable, first.delta) == ("", "the quick", "")
    second = s.update("The quick brown fox")
    assert (second.stable, second.unstable, second.delta) == (
        "The quick",
        "brown fox",
        "The quick",
    )  # newest spelling wins
    third = s.update("a quick brown fox jumps")  # contradicts a committed word
    assert third.stable == "The quick" and third.delta == ""
    assert third.unstable == "brown fox jumps"
    fourth = s.update("a quick brown fox jumps over")
    assert fourth.delta == "brown fox jumps" and fourth.stable == "The quick brown fox jumps"


def test_punctuation_and_case_changes_are_not_disagreements():
    s = PartialStabilizer()
    s.update("hello world.")
    assert s.update("Hello, world and").delta == "Hello, world"


def test_final_delta_is_what_append_only_clients_lack():
    s = PartialStabilizer()
    s.update("good morning every")
    s.update("good morning everyone")
    assert s.final_delta("Good morning everyone, welcome.") == "everyone, welcome."
