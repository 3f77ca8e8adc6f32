"""Bag-of-words superposition (BOWS): binary bag-of-words windows from real text, a fast tied
ReLU autoencoder trainer, synthetic correlated features, and the geometry analyses that relate
feature directions to data statistics."""
from .corpus import FORCED_WORDS, load_corpus, tokenize
from .data import Batch, BowsData, DataConfig, build_data, build_vocab, make_windows, window_matrix
from .model import BowsModel, dense_loss, resolve_dtype
from .pipeline import PipelineConfig, run_pipeline
from .report import AnalyzeConfig, analyze
from .sweep import SweepConfig, run_sweep
from .synthetic import SyntheticConfig, run_synthetic, train_sweep
from .train import TrainConfig, decay_strength, evaluate, load_model, train

__all__ = [
    "FORCED_WORDS", "load_corpus", "tokenize", "Batch", "BowsData", "DataConfig", "build_data",
    "build_vocab", "make_windows", "window_matrix", "BowsModel", "dense_loss", "resolve_dtype",
    "PipelineConfig", "run_pipeline", "AnalyzeConfig", "analyze", "SweepConfig", "run_sweep", "SyntheticConfig",
    "run_synthetic", "train_sweep", "TrainConfig", "decay_strength", "evaluate", "load_model", "train",
]
