"""Speech detection stages, cheapest first.

1. `energy.EnergyGate` — frames quieter than `energy_gate_dbfs` are silence outright. It is free
   and stops the models from finding "speech" in near-digital silence or a far-away hum.
2. `webrtc.WebrtcFrames` — Google's webrtcvad on each 10 ms frame. A cheap second opinion that
   must agree before a segment *opens*, so FSMN's occasional blips on noise do not start segments.
3. FSMN VAD (`fsmn.SpeechScorer`, scored by inference/vad_fsmn.py with the real fsmn-vad weights) —
   the accurate judge: its speech probability decides onset (with webrtcvad) and, alone, when
   speech continues, so the 300 ms silence rule follows it.
"""
