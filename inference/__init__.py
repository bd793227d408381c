"""The only package that loads models and touches devices: engines, FSMN VAD scorer, executor."""
