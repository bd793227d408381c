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


def test_chinese_characters_are_tokens_so_chinese_partials_become_stable():
    s = PartialStabilizer()
    s.update("今天天")
    second = s.update("今天天气很")
    assert (second.stable, second.unstable, second.delta) == ("今天天", "气很", "今天天")
    third = s.update("今天天气很好 OK 吗")
    assert third.stable == "今天天气很" and third.unstable == "好 OK 吗"
    assert s.final_delta("今天天气很好，OK吗？") == "好，OK吗？"


def test_settled_text_from_a_streaming_model_is_stable_at_once():
    s = PartialStabilizer()
    first = s.settle("我们")
    assert (first.stable, first.unstable, first.delta) == ("我们", "", "我们")
    second = s.settle("我们开始 lecture")
    assert (second.stable, second.delta) == ("我们开始 lecture", "开始 lecture")
    assert s.final_delta("我们开始 lecture。") == "。"


def test_final_delta_skips_punctuation_the_final_inserted_into_committed_text():
    s = PartialStabilizer()
    s.settle("今天天气很好我们出发")
    assert s.final_delta("今天天气很好，我们出发吧。") == "吧。"
    s = PartialStabilizer()
    s.settle("hello world")
    assert s.final_delta("Hello, world. Bye.") == "Bye."
