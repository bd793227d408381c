"""The close-code table: which code each way of closing a socket carries, and reasons that fit a
close frame."""

from aiohttp import WSCloseCode

from server import closing


def test_refusals_a_client_may_retry_are_1013_the_others_1008():
    assert closing.refused("busy", "server busy").code == WSCloseCode.TRY_AGAIN_LATER
    assert closing.refused("too_many_failures", "wait").code == WSCloseCode.TRY_AGAIN_LATER
    for code in ("unauthorized", "forbidden", "forbidden_origin", "session_taken"):
        assert closing.refused(code, "no").code == WSCloseCode.POLICY_VIOLATION


def test_stopping_says_whether_to_come_back_soon():
    assert closing.stopping(restart=True).code == WSCloseCode.SERVICE_RESTART
    assert closing.stopping(restart=False).code == WSCloseCode.GOING_AWAY
    assert closing.TAKEN_OVER.code == closing.SESSION_TAKEN_OVER == 4001


def test_a_reason_is_cut_to_what_a_close_frame_holds_on_a_character_boundary():
    assert closing.reason_bytes("idle for 120 s") == b"idle for 120 s"
    chinese = "服务器繁忙，请稍后再试" * 10  # 330 bytes in UTF-8; 120 characters would be 330 too
    cut = closing.reason_bytes(chinese)
    assert len(cut) <= closing.MAX_REASON_BYTES == 123
    assert chinese.startswith(cut.decode())  # valid UTF-8, nothing but whole characters
    assert len(cut) > closing.MAX_REASON_BYTES - 3
