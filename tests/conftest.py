import os
import sys

# helpers (tiny.py, planted.py) live here; tests in subfolders import them by name
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# With 2 cores a busy neighbour makes multi-threaded small matmuls 25-100x slower.
torch.set_num_threads(1)
