"""Training: pretraining on Megatron shards and ChatML fine-tuning, with FSDP2 × TP × PP applied from outside.

Entry points: `meditron.train.config.load_train_config`, `meditron.train.loop.train`,
`meditron.train.checkpoint.export_checkpoint`, `meditron.train.metrics.plot_run` (see docs/training.md).
"""
