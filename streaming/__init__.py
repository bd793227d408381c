"""Sans-I/O streaming core: PCM bytes in, speech segments and partial requests out.

Synchronous and numpy-only: no event loop, no model weights. Speech scoring by the FSMN model is
asked for through the `SpeechScorer` protocol so the inference side can batch it across streams.
"""
