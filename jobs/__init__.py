"""File transcription: decoding media files, batch jobs with crash-resume, history and exports."""
