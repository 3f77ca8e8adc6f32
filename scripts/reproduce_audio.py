"""Reproduce the audio report: Whisper encoder sign features on spoken words, against a
random-init Whisper and the log-mel input, with word identity across voices and a causal test.

    python scripts/reproduce_audio.py                  # writes runs/whisper-tiny.en/reports/
    python scripts/reproduce_audio.py --write-reports  # regenerates reports/whisper-tiny.en/

Needs espeak-ng (the spoken-word set) and the embedded whisper-tiny.en. Flags: --help. The
experiment lives in experiments/audio.py (page in experiments/audio_report.py).
"""

import sys

from experiments.audio import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
