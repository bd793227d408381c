"""Speech texts with known words shared by the accuracy tests and bench/accuracy.py."""

from __future__ import annotations

# ../shared/audio/jfk.wav, as spoken
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
# ../shared/audio/two_speakers_phone.wav (pyannote.audio's sample.wav), which has no word reference of
# its own. The words on which published transcripts of that file by other recognisers (Deepgram,
# Whisper small and larger, pyannote pipelines; found with the search tool on 27 Nov 2026) and a
# hand-cut clip list agree. Two spans are uncertain and carry the reading of the most sources:
# the back-channel at ~10.5 s ("okay"; one source "I hear that") and ~27.5 s ("so what can I say";
# one source "so what kind of thing"): at most 6 of its 79 words.
PHONE_TEXT = (
    "Hello? Hello? Oh, hello. I didn't know you were there. Neither did I. Okay. I thought, you know, "
    "I heard a beep. This is Diane in New Jersey. And I'm Sheila in Texas, originally from Chicago. "
    "Oh, I'm originally from Chicago also. I'm in New Jersey now, though. Well, there isn't that much "
    "difference. At least, you know, they all call me a Yankee down here, so what can I say? "
    "I don't hear that in New Jersey now."
)
# Short phrases with short pauses: each one a segment of its own at the default 300 ms silence
SHORT = ["ever tried", 0.45, "ever failed", 0.45, "no matter", 0.45, "try again", 0.45, "fail again", 0.45,
         "fail better", 0.8, "the rain stopped", 0.4, "we went outside", 0.5, "and the sun came out", 0.6]  # fmt: skip
# Over 30 s of speech without a pause when spoken at 150 wpm: cut for length once
MONOLOGUE = (
    "the history of the city begins with a small village on the river where farmers traded grain and "
    "fish with travellers who came from the hills and over the years the village grew into a busy town "
    "with a market a school and a bridge made of stone and when the railway arrived the town became a "
    "city with factories and new streets and thousands of workers who moved there with their families "
    "to find work and a better life for their children who later built the museum the library and the "
    "park that people still visit every weekend when the weather is good and the days are long"
)
