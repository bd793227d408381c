"""Text post-processing for captions: inverse text normalisation and hotword lists."""
